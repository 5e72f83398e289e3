"""Teacher-feature cache: built once, no-op when current, rebuilt when settings change, resumable, fingerprinted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.teachers import make_teacher_config
from featurenerf_ns.teachers.cache import (
    TeacherCache,
    TeacherCacheError,
    build_cache,
    open_cache,
    open_cache_without_teacher,
)


def _teacher(**kw):
    kw.setdefault("layer", 3)
    return make_teacher_config("dinov2-vits14", weights="random", input_size=56, **kw).setup()


@pytest.fixture()
def cat(chair_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(chair_root, root)
    return CategoryData(root, "chair")


def test_build_then_noop_then_layer_change_rebuilds(cat):
    ids = cat.ids("train")[:3]
    t = _teacher()
    r1 = build_cache(cat, t, ids, quiet=True)
    assert r1.built == ids and not r1.reused and r1.images == 3 * 6 and r1.images_per_second > 0
    cache = TeacherCache(r1.cache_dir)
    assert cache.manifest["complete"] and cache.instances == ids and cache.dim == 384 and cache.map_size == (4, 4)
    f = cache.features(ids[0])
    assert f.dtype == np.float16 and f.shape == (6, 384, 4, 4)
    rgb, alpha = _views(cat, ids[0])
    np.testing.assert_allclose(f.astype(np.float32), t.extract(rgb, alpha).features.numpy(), atol=2e-2, rtol=1e-2)
    mtime = (r1.cache_dir / f"{ids[0]}.npy").stat().st_mtime_ns

    r2 = build_cache(cat, _teacher(), ids, quiet=True)
    assert r2.built == [] and r2.reused == ids and r2.rebuilt_reason is None
    assert (r1.cache_dir / f"{ids[0]}.npy").stat().st_mtime_ns == mtime

    r3 = build_cache(cat, _teacher(layer=5), ids, quiet=True)
    assert r3.built == ids and "layer: 3 -> 5" in r3.rebuilt_reason
    assert not np.allclose(TeacherCache(r3.cache_dir).features(ids[0]), f)


def _views(cat, inst):
    from featurenerf_ns.teachers.cache import load_views

    return load_views(cat.instance(inst))


def test_interrupted_build_resumes_and_leaves_no_partial_files(cat, monkeypatch):
    ids = cat.ids("train")[:4]
    t = _teacher()
    calls = {"n": 0}
    real = t.extract

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # batch_size 8 > 6 views: one call per instance -> dies during the third instance
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(t, "extract", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(cat, t, ids, quiet=True)
    d = cat.root / "teacher_cache" / "dinov2-vits14" / "chair"
    assert sorted(p.stem for p in d.glob("*.npy")) == sorted(ids[:2])
    assert not list(d.glob(".*tmp")) and not json.loads((d / "manifest.json").read_text())["complete"]
    with pytest.raises(TeacherCacheError, match="incomplete"):
        open_cache(cat, _teacher(), ids, build=False)
    monkeypatch.undo()
    r = build_cache(cat, _teacher(), ids, quiet=True)
    assert r.reused == ids[:2] and r.built == ids[2:]
    full = build_cache(cat, _teacher(), ids, cache_dir=cat.root / "fresh", quiet=True)
    for i in ids:
        np.testing.assert_array_equal(TeacherCache(r.cache_dir).features(i), TeacherCache(full.cache_dir).features(i))


def test_changed_images_are_re_extracted(cat):
    ids = cat.ids("train")[:2]
    build_cache(cat, _teacher(), ids, quiet=True)
    img = cat.instance(ids[1]).image_paths[0]
    from PIL import Image

    arr = np.asarray(Image.open(img)).copy()
    arr[10:20, 10:20] = 255
    Image.fromarray(arr).save(img)
    r = build_cache(cat, _teacher(), ids, quiet=True)
    assert r.reused == ids[:1] and r.built == ids[1:]


def test_cache_only_open_checks_settings_and_images_without_building_the_teacher(cat, monkeypatch):
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManager, FeatureNeRFDataManagerConfig
    from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
    from featurenerf_ns.teachers import TeacherSpec
    from featurenerf_ns.teachers.vit import ViTTeacher

    ids = cat.ids("train")
    build_cache(cat, _teacher(), ids, quiet=True)
    built = open_cache(cat, _teacher(), ids, build=False)

    def no_network(*a, **k):
        raise AssertionError("the teacher network was built")

    monkeypatch.setattr(ViTTeacher, "__init__", no_network)
    cfg = make_teacher_config("dinov2-vits14", weights="random", input_size=56, layer=3)
    cache = open_cache_without_teacher(cat, cfg, ids)
    assert cache.key == built.key and np.array_equal(cache.features(ids[0]), built.features(ids[0]))
    # what a training run passes: the data manager's option
    spec = TeacherSpec(weights="random", input_size=56, layer=3)
    dm_cfg = FeatureNeRFDataManagerConfig(
        dataparser=FeatureNeRFDataParserConfig(data=cat.root / "chair"), teacher=spec, teacher_cache_only=True
    )
    dm = FeatureNeRFDataManager(dm_cfg)
    assert dm.teacher_feature_dim == 384 and dm.teacher_cache.key == built.key
    # refused: other settings, an instance the cache lacks, changed images (each a one-line error naming the file)
    other = make_teacher_config("dinov2-vits14", weights="random", input_size=56, layer=5)
    with pytest.raises(TeacherCacheError, match="layer: 3 -> 5") as e:
        open_cache_without_teacher(cat, other, ids)
    assert "manifest.json" in str(e.value) and "\n" not in str(e.value)
    # precision "auto" (above) accepts the precision the cache was built at; an explicit other one is refused
    other_precision = "float32" if built.identity["precision"] == "bfloat16" else "bfloat16"
    explicit = make_teacher_config("dinov2-vits14", weights="random", input_size=56, layer=3, precision=other_precision)
    with pytest.raises(TeacherCacheError, match=f"precision: '{built.identity['precision']}' -> '{other_precision}'"):
        open_cache_without_teacher(cat, explicit, ids)
    with pytest.raises(TeacherCacheError, match="incomplete"):
        open_cache_without_teacher(cat, cfg, ids + cat.ids("test")[:1])
    with pytest.raises(TeacherCacheError, match="pca_dim: None -> 8"):
        open_cache_without_teacher(cat, cfg, ids, pca_dim=8)
    img = cat.instance(ids[1]).image_paths[0]
    img.write_bytes(img.read_bytes() + b"\0")
    with pytest.raises(TeacherCacheError, match=f"{ids[1]}.json.*do not match"):
        open_cache_without_teacher(cat, cfg, ids)


def test_pca_is_fitted_on_train_stored_and_keeps_background_zero(cat):
    ids = cat.ids("train")[:2]
    t = _teacher()
    r = build_cache(cat, t, ids, pca_dim=8, pca_ids=ids, pca_views=3, quiet=True)
    cache = open_cache(cat, t, ids, pca_dim=8, build=False)
    assert cache.dim == 8 and cache.pca is not None and cache.pca.components.shape == (8, 384)
    comps = cache.pca.components
    np.testing.assert_allclose(comps @ comps.T, np.eye(8), atol=1e-4)
    f = cache.features(ids[0]).astype(np.float32)
    _, alpha = _views(cat, ids[0])
    bg = torch.nn.functional.interpolate(alpha, size=(4, 4), mode="area")[:, 0].numpy() == 0
    assert f.shape == (6, 8, 4, 4) and np.abs(f.transpose(0, 2, 3, 1)[bg]).max() == 0
    # same settings -> no-op (PCA reused), other k -> rebuild
    assert build_cache(cat, t, ids, pca_dim=8, pca_ids=ids, pca_views=3, quiet=True).built == []
    assert "pca_dim: 8 -> 4" in build_cache(cat, t, ids, pca_dim=4, pca_ids=ids, pca_views=3, quiet=True).rebuilt_reason
    assert r.cache_dir.is_dir()


def test_reader_errors_name_the_file(cat, tmp_path):
    with pytest.raises(TeacherCacheError) as e:
        TeacherCache(tmp_path / "nowhere")
    assert "manifest.json" in str(e.value) and "featurenerf-teacher cache" in str(e.value) and "\n" not in str(e.value)
    ids = cat.ids("train")[:1]
    r = build_cache(cat, _teacher(), ids, quiet=True)
    (r.cache_dir / f"{ids[0]}.npy").write_bytes(b"garbage")
    with pytest.raises(TeacherCacheError, match=f"{ids[0]}.npy"):
        TeacherCache(r.cache_dir).features(ids[0])
    # a corrupted file is detected (sidecar/shape check) and re-extracted on the next build
    assert build_cache(cat, _teacher(), ids, quiet=True).built == ids


def test_cli_cache_and_info(cat, capsys):
    from featurenerf_ns.scripts.teacher import Cache, Info
    from featurenerf_ns.teachers import TeacherSpec as TeacherArgs

    args = TeacherArgs(weights="random", input_size=56, layer=2)
    Cache(data=cat.root, category="chair", teacher=args, max_instances=2).main()
    out = capsys.readouterr().out
    assert "2 instances extracted" in out and "images/s" in out
    Cache(data=cat.root, category="chair", teacher=args, max_instances=2).main()
    assert "nothing to do" in capsys.readouterr().out
    Info(data=cat.root).main()
    assert "complete" in capsys.readouterr().out
