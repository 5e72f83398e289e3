"""Official FeatureNeRF annotations and pair lists (issue 19, part 1): a fixture written in the official format,
evaluated with the official pairs; the figures of a constructed case are the ones computed by hand below."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.eval.correspondence import evaluate
from featurenerf_ns.eval.protocols import official_protocol, resolve_protocol
from featurenerf_ns.eval.providers import FeatureProvider, PositionPrior

SYNSET = "03001627"
R = 128


def box_labels(split_col: int) -> np.ndarray:
    """A 128 x 128 part map: foreground rows/cols 32..95, label 1 left of ``split_col``, label 2 from it on."""
    m = np.zeros((R, R), np.int64)
    m[32:96, 32:split_col] = 1
    m[32:96, split_col:96] = 2
    return m


def write_official(root: Path, split: dict | None = None) -> Path:
    """Two test instances A and B with two views each, in the official layout."""
    parts = {"A": [box_labels(64), box_labels(80)], "B": [box_labels(80), box_labels(64)]}
    kp2d = {  # per view rows [x, y, kp_id] of the visible keypoints
        "A": [np.array([[40, 50, 7], [90, 60, 9]]), np.array([[45, 50, 7]])],
        "B": [np.array([[45, 50, 7], [70, 40, 9], [50, 50, 11]]), np.zeros((0, 3), np.int64)],
    }
    pts = {
        "A": (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32), np.array([1, 1, 2, 0])),
        "B": (np.array([[0.1, 0, 0], [0.9, 0, 0], [0, 0.9, 0], [1, 1, 0]], np.float32), np.array([1, 2, 2, 1])),
    }
    kp3d = {
        "A": (np.array([[0, 0, 0.5, 7], [1, 1, 0.5, 9]], np.float32), np.array([[0, 0, 0.5]], np.float32)),
        "B": (
            np.array([[0.06, 0, 0.5, 7], [0.5, 0.5, 0.5, 9], [0.3, 0.3, 0.3, 11]], np.float32),
            np.array([[0, 0, 0.5], [1, 1, 0.52], [0.5, 0.5, 0.45]], np.float32),
        ),
    }
    for inst in "AB":
        d = root / "img" / SYNSET / inst
        d.mkdir(parents=True)
        frames = []
        for v in range(2):
            rgba = np.zeros((R, R, 4), np.uint8)
            rgba[..., :3] = 128
            rgba[..., 3] = (parts[inst][v] > 0) * 255
            Image.fromarray(rgba).save(d / f"{v:03d}.png")
            c2w = np.eye(4)
            c2w[2, 3] = 1.3 + 0.1 * v
            frames.append({"file_path": f"{v:03d}", "transform_matrix": c2w.tolist()})
        (root / "camera" / SYNSET).mkdir(parents=True, exist_ok=True)
        (root / "camera" / SYNSET / f"{inst}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
        for kind in ("kp_2d_anno", "kp_3d_anno", "part_2d_anno", "part_3d_anno"):
            (root / kind / SYNSET).mkdir(parents=True, exist_ok=True)
        per_view = np.empty(2, dtype=object)
        per_view[:] = kp2d[inst]
        np.savez(root / "kp_2d_anno" / SYNSET / f"{inst}.npz", labels=per_view)  # pickled, as the official files
        np.savez(root / "kp_3d_anno" / SYNSET / f"{inst}.npz", labels=kp3d[inst][0], pts=kp3d[inst][1])
        np.savez(root / "part_2d_anno" / SYNSET / f"{inst}.npz", labels=np.stack(parts[inst]))
        np.savez(root / "part_3d_anno" / SYNSET / f"{inst}.npz", pts=pts[inst][0], labels=pts[inst][1])
    split = split or {
        "train": [],
        "val": [],
        "test": ["A", "B"],
        "cross_inst_pairs": [{"src": "A", "trg": "B", "view": 0}],
        "cross_view_pairs": [{"model_id": "A", "src_view": 0, "trg_view": 1}],
    }
    (root / "splits").mkdir()
    (root / "splits" / f"{SYNSET}.json").write_text(json.dumps(split))
    return root


class Position(FeatureProvider):
    """Features = position: the pixel centre in 2D, xyz in 3D, matched by Euclidean distance (so every nearest
    neighbour below can be worked out by hand)."""

    names = ("position",)
    metric = "euclidean"

    def pixels(self, inst, input_view, view, xy, resolution):
        return {"position": xy.float()}

    def points(self, inst, input_view, xyz):
        return {"position": xyz.float()}


@pytest.fixture()
def official(tmp_path) -> CategoryData:
    return CategoryData(write_official(tmp_path / "official"), "chair")


def test_official_annotations_read_into_our_arrays(official):
    cat = official
    assert cat.annotation_format == "official" and cat.has_annotations
    assert cat.keypoint_names == ["kp7", "kp9", "kp11"] and cat.part_names == ["part1", "part2"]
    v = cat.view_annotations("B")
    assert v["parts"].shape == (2, R, R) and "depth" not in v
    np.testing.assert_array_equal(v["kp_visible"], [[True, True, True], [False, False, False]])
    np.testing.assert_allclose(v["kp2d"][0], [[45.5, 50.5], [70.5, 40.5], [50.5, 50.5]])  # pixel centres
    s = cat.shape_annotations("A")
    np.testing.assert_array_equal(s["keypoint_present"], [True, True, False])
    assert np.isnan(s["keypoints"][2]).all() and s["keypoint_candidates"].shape == (1, 3)
    assert cat.fingerprint.startswith("official-")


def test_official_pairs_become_cross_instance_and_novel_view(official):
    p = resolve_protocol(official, pairs="official")
    assert p.source == "official" and p.cross_instance == [("A", "B", 0)] and p.novel_view == [("A", 0, 1)]
    assert p.cross_view == [] and p.num_views == 2


def test_official_pairs_scored_as_computed_by_hand(official):
    m, _ = evaluate(Position(), official, official_protocol(official), resolution=R)
    # 2D parts, A view 0 -> B view 0: a target pixel takes the label at its own position in A (split at column 64);
    # B's split is at 80. Label 1: 32 of 48 columns (2/3); label 2: 16 of 32 (1/2).
    assert m["position/part2d_cross/miou"] == pytest.approx((200 / 3 + 50) / 2)
    # 2D keypoints: kp7 lands on (40.5, 50.5), B has it at (45.5, 50.5): exactly 5 px, which misses PCK@5 (strict,
    # as official); kp9 lands 28.3 px away; kp11 is not in A.
    assert [m[f"position/kp2d_cross/pck@{t}"] for t in (2.5, 5, 7.5, 10)] == [0.0, 0.0, 50.0, 50.0]
    assert m["position/kp2d_cross/num_keypoints"] == 2
    # 3D parts, B's points take the label of the nearest A point: B (0.1,0,0)->1 ok, (0.9,0,0)->1 (truth 2),
    # (0,0.9,0)->2 ok, (1,1,0)->0 (A's unlabelled point takes part; truth 1). IoU 1: 1/3, IoU 2: 1/2.
    assert m["position/part3d_cross/miou"] == pytest.approx((100 / 3 + 50) / 2)
    # 3D keypoints go to B's kp_3d_anno candidates, not to its part points: kp7 (0,0,0.5) -> candidate (0,0,0.5),
    # 0.06 from the truth; kp9 (1,1,0.5) -> (1,1,0.52), 0.71 away.
    assert [m[f"position/kp3d_cross/pck@{t}"] for t in (0.025, 0.05, 0.075, 0.1)] == [0.0, 0.0, 50.0, 50.0]
    # Novel view, A view 0 -> A view 1 (split at 80 there): the same 2D parts figure; kp7 at 5 px again.
    assert m["position/part2d_novel/miou"] == pytest.approx((200 / 3 + 50) / 2)
    assert [m[f"position/kp2d_novel/pck@{t}"] for t in (2.5, 5, 7.5, 10)] == [0.0, 0.0, 100.0, 100.0]


def test_position_priors_on_official_data_score_3d_only(official):
    m, _ = evaluate(PositionPrior(official, "object"), official, official_protocol(official), resolution=R)
    assert m["alignment_oracle/part3d_cross/miou"] == pytest.approx((100 / 3 + 50) / 2)
    assert np.isnan(m["alignment_oracle/part2d_cross/miou"])  # no depth maps: 2D rows are skipped, not invented


def test_bad_official_files_get_one_line_errors(tmp_path):
    cat = CategoryData(write_official(tmp_path / "a"), "chair")
    np.savez(tmp_path / "a" / "part_2d_anno" / SYNSET / "B.npz", labels=np.zeros((3, R, R), np.int64))
    with pytest.raises(FeatureNeRFDataError, match=r"part_2d_anno/03001627/B.npz: labels has shape \(3, 128, 128\)"):
        cat.view_annotations("B")
    (tmp_path / "a" / "kp_3d_anno" / SYNSET / "A.npz").unlink()
    with pytest.raises(FeatureNeRFDataError, match="kp_3d_anno file missing for instance A"):
        CategoryData(tmp_path / "a", "chair").shape_annotations("A")
    bad = {"train": [], "val": [], "test": ["A", "B"], "cross_inst_pairs": [{"src": "A", "view": 0}]}
    cat = CategoryData(write_official(tmp_path / "b", bad), "chair")
    with pytest.raises(FeatureNeRFDataError, match=r"cross_inst_pairs\[0\] is .* expected an object with src, trg"):
        official_protocol(cat)
    bad["cross_inst_pairs"] = [{"src": "A", "trg": "B", "view": 2}]
    cat = CategoryData(write_official(tmp_path / "c", bad), "chair")
    with pytest.raises(FeatureNeRFDataError, match="asks for view"):
        official_protocol(cat)


def test_ours_unchanged_without_official_folders(tmp_path):
    root = write_official(tmp_path / "o")
    for kind in ("kp_2d_anno", "kp_3d_anno", "part_2d_anno", "part_3d_anno"):
        for f in (root / kind / SYNSET).iterdir():
            f.unlink()
        (root / kind / SYNSET).rmdir()
    cat = CategoryData(root, "chair")
    assert cat.annotation_format is None and not cat.has_annotations
    with pytest.raises(FeatureNeRFDataError, match="no annotations for chair"):
        cat.view_annotations("A")
