"""Procedural generator: determinism, resumable/atomic writes, settings checks, CLI and contact sheet."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL, make_dataset

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import FeatureNeRFDataError, Layout
from featurenerf_ns.data.procedural import generate as gen
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES, get_category

TINY = dict(num_instances=3, train_views=3, eval_views=3, resolution=48, num_points=256)


def tree_digest(root: Path) -> dict:
    """sha256 of every file the generator wrote. ``teacher_cache/`` is left out: trainings on the shared session
    dataset (the ``tiny_run`` fixture, whichever test asks for it first) add it there, and it is not generator
    output."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "teacher_cache"
    }


def test_same_seed_reproduces_identical_files(tmp_path, chair_root):
    make_dataset(tmp_path / "again", "chair")
    first, second = tree_digest(chair_root), tree_digest(tmp_path / "again")
    assert first == second
    assert len(first) > 6 * 6  # images, cameras, annotations, split


def test_other_seed_gives_other_instances(tmp_path, chair_root):
    make_dataset(tmp_path / "other", "chair", seed=SMALL["seed"] + 1)
    a = CategoryData(chair_root, "chair").shape_annotations("inst_0000")["mesh_vertices"]
    b = CategoryData(tmp_path / "other", "chair").shape_annotations("inst_0000")["mesh_vertices"]
    assert a.shape != b.shape or not np.allclose(a, b)


def test_split_is_70_10_20():
    split = gen.split_assignment(gen.GeneratorSettings("chair", num_instances=60))
    assert [len(split[s]) for s in ("train", "val", "test")] == [42, 6, 12]
    assert len(set(sum(split.values(), []))) == 60


def test_interrupted_instance_never_reads_complete_and_resume_finishes(tmp_path, monkeypatch, chair_root):
    root = tmp_path / "killed"
    settings = gen.GeneratorSettings(category="chair", **SMALL)
    calls = {"n": 0}
    real_replace = gen.replace_dir

    def dying_replace(
        src, dst
    ):  # the process "dies" after moving the images of the 3rd instance, before its annotations
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(gen, "replace_dir", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_category(root, settings)
    monkeypatch.setattr(gen, "replace_dir", real_replace)
    assert not gen.instance_complete(root, settings, "inst_0002")  # images moved but no camera file
    assert gen.instance_complete(root, settings, "inst_0001")
    with pytest.raises(FeatureNeRFDataError, match="split file not found"):
        CategoryData(root / "chair")
    gen.generate_category(root, settings)
    assert tree_digest(root) == tree_digest(chair_root)  # identical to an uninterrupted run


def test_rerun_is_noop_and_settings_change_is_refused(tmp_path):
    root = tmp_path / "d"
    settings = make_dataset(root, "chair", **TINY)
    cam = Layout(root, "chair").camera_file("inst_0000")
    mtime = cam.stat().st_mtime_ns
    gen.generate_category(root, settings)
    assert cam.stat().st_mtime_ns == mtime
    with pytest.raises(FeatureNeRFDataError, match=r"category\.json.*resolution: 48 -> 64.*--overwrite"):
        gen.generate_category(root, gen.GeneratorSettings("chair", **{**TINY, "resolution": 64}))
    gen.generate_category(root, gen.GeneratorSettings("chair", **{**TINY, "resolution": 64}), overwrite=True)
    assert CategoryData(root, "chair").instance("inst_0000").width == 64


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_every_category_generates_annotated_instances(tmp_path, category):
    module = get_category(category)
    make_dataset(tmp_path, category, **TINY)
    data = CategoryData(tmp_path / category)
    assert data.part_names == list(module.PARTS)
    assert data.keypoint_names == [k for k, _ in module.KEYPOINTS]
    for inst in data.ids("train") + data.ids("val") + data.ids("test"):
        rec = data.instance(inst)
        shape, views = data.shape_annotations(inst), data.view_annotations(inst)
        assert len(rec.image_paths) == len(views["parts"]) == 3
        assert shape["points"].shape == (256, 3) and np.isfinite(shape["points"]).all()
        assert shape["point_labels"].min() >= 1 and shape["point_labels"].max() <= len(module.PARTS)
        extent = shape["mesh_vertices"].max(0) - shape["mesh_vertices"].min(0)
        assert np.isclose(extent.max(), gen.LONGEST_EDGE, atol=1e-5)
        assert np.linalg.norm(shape["mesh_vertices"], axis=1).max() <= gen.MAX_RADIUS + 1e-6
        assert views["parts"].max() > 0 and (views["parts"] > 0).mean() > 0.03


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_instances_vary_in_structure(category):
    """Across 40 seeds a category produces several distinct discrete styles and varied proportions."""
    module = get_category(category)
    styles, extents = set(), []
    for seed in range(40):
        spec = module.build(np.random.default_rng(seed))
        styles.add(tuple(sorted((k, v) for k, v in spec.style.items() if isinstance(v, (str, bool)))))
        verts = np.concatenate([m.vertices for _, m in spec.parts])
        ext = verts.max(0) - verts.min(0)
        extents.append(ext / ext.max())
    assert len(styles) >= 4
    assert np.std(np.array(extents), axis=0).max() > 0.03  # bounding-box aspect ratios vary


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "featurenerf_ns.scripts.data", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_generates_and_makes_contact_sheet(tmp_path):
    out = tmp_path / "cli"
    r = _cli(
        "procedural",
        "--category",
        "chair",
        "--num-instances",
        "3",
        "--train-views",
        "2",
        "--eval-views",
        "2",
        "--resolution",
        "32",
        "--out",
        str(out),
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout and json.loads((out / "splits" / "chair.json").read_text())
    r = _cli("contact-sheet", "--data", str(out), "--out", str(tmp_path / "sheet.png"), "--instances", "2")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    assert img.shape[0] > 100 and img.std() > 10


def test_cli_unknown_category_is_one_line_error(tmp_path):
    r = _cli("procedural", "--category", "sofa", "--out", str(tmp_path))
    assert r.returncode == 2
    msg = r.stdout.strip()
    assert "sofa" in msg and "chair" in msg and "\n" not in msg and "Traceback" not in r.stdout + r.stderr
