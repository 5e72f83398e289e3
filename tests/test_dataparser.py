"""nerfstudio dataparser: outputs, registration and one-line errors for bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL

from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.data.layout import FeatureNeRFDataError


def parse(data, split="train", **kw):
    return FeatureNeRFDataParserConfig(data=Path(data), **kw).setup().get_dataparser_outputs(split)


def test_outputs_group_images_by_instance(chair_root):
    out = parse(chair_root / "chair")
    ids = out.metadata["instance_ids"]
    assert len(out.image_filenames) == len(ids) * SMALL["train_views"] == out.cameras.shape[0]
    assert out.cameras.camera_to_worlds.shape[1:] == (3, 4)
    assert int(out.cameras.width[0]) == SMALL["resolution"]
    torch.testing.assert_close(out.metadata["instance_index"].bincount(), torch.full((len(ids),), SMALL["train_views"]))
    for img, k, v in zip(out.image_filenames, out.metadata["instance_index"], out.metadata["view_index"]):
        assert img.parent.name == ids[k] and img.stem == f"{int(v):03d}"
    assert set(out.metadata) == {"instance_ids", "instance_index", "view_index"}
    # Cameras sit 1.3 from the object centre, so near/far 0.8/1.8 cover the object.
    dist = out.cameras.camera_to_worlds[:, :3, 3].norm(dim=1)
    torch.testing.assert_close(dist, torch.full_like(dist, 1.3), atol=1e-5, rtol=0)


def test_same_result_via_root_and_category_or_synset(chair_root):
    a = parse(chair_root / "chair", "test")
    b = parse(chair_root, "test", category="chair")
    c = parse(chair_root, "test", category="03001627")
    assert a.image_filenames == b.image_filenames == c.image_filenames


def test_input_dataset_composites_on_black(chair_root):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    ds = InputDataset(parse(chair_root / "chair"))
    item = ds[0]
    assert item["image"].shape == (SMALL["resolution"], SMALL["resolution"], 3)
    assert item["image"][0, 0].abs().sum() == 0 and item["image"].max() > 0.2


def test_registered_with_nerfstudio():
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    parsers, _ = discover_dataparsers()
    assert isinstance(parsers["featurenerf-data"], FeatureNeRFDataParserConfig)


@pytest.fixture
def broken_root(tmp_path, chair_root):
    root = tmp_path / "copy"
    shutil.copytree(chair_root, root)
    return root


def _one_line_error(match, data, **kw):
    with pytest.raises(FeatureNeRFDataError, match=match) as e:
        parse(data, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_directory(tmp_path):
    msg = _one_line_error("data directory not found", tmp_path / "nowhere" / "chair")
    assert "featurenerf-data procedural" in msg


def test_unknown_category(chair_root):
    msg = _one_line_error("unknown category 'sofa'", chair_root / "sofa")
    assert "present: chair" in msg
    msg = _one_line_error("unknown category 'car'", chair_root, category="car")
    assert "--category car" in msg


def _first_camera(root):
    split = json.loads((root / "splits" / "chair.json").read_text())
    inst = split["train"][0]
    return inst, root / "camera" / "chair" / f"{inst}.json"


def test_image_pose_count_mismatch(broken_root):
    inst, _ = _first_camera(broken_root)
    (broken_root / "img" / "chair" / inst / "000.png").unlink()
    msg = _one_line_error(r"5 images but .* lists 6 poses", broken_root / "chair")
    assert inst in msg


def test_pose_not_4x4(broken_root):
    _, cam = _first_camera(broken_root)
    d = json.loads(cam.read_text())
    d["frames"][2]["transform_matrix"] = d["frames"][2]["transform_matrix"][:3]
    cam.write_text(json.dumps(d))
    msg = _one_line_error(r"frame 2 transform_matrix has shape \(3, 4\), expected 4x4", broken_root / "chair")
    assert str(cam) in msg


def test_corrupt_image(broken_root):
    inst, _ = _first_camera(broken_root)
    png = broken_root / "img" / "chair" / inst / "003.png"
    png.write_bytes(png.read_bytes()[:100])
    msg = _one_line_error("corrupt or unreadable image", broken_root / "chair", verify_images=True)
    assert str(png) in msg


def test_incomplete_category(broken_root):
    (broken_root / "splits" / "chair.json").unlink()
    _one_line_error("split file not found .* re-run `featurenerf-data procedural", broken_root / "chair")


def test_corrupt_annotation_names_file(broken_root):
    from featurenerf_ns.data.instances import CategoryData

    inst, _ = _first_camera(broken_root)
    f = broken_root / "annotations" / "chair" / inst / "views.npz"
    f.write_bytes(b"garbage")
    with pytest.raises(FeatureNeRFDataError, match="unreadable annotation archive") as e:
        CategoryData(broken_root / "chair").view_annotations(inst)
    assert str(f) in str(e.value)
