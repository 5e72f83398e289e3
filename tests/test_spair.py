"""featurenerf-spair: the SPair-71k reader and its PCK on hand-computed cases, one-line errors for bad inputs, and an
end-to-end run of the CLI with the shared tiny model on a fixture in the exact SPair-71k layout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spair_fixture import write_spair_fixture

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.eval.spair import (
    PCKAccumulator,
    SPairDataset,
    load_pair,
    pck_correct,
    pck_threshold,
    prepare_side,
    query_pixels,
    spair_category,
    spair_foreground,
)

EXE = Path(sys.executable).parent / "featurenerf-spair"
IDENTICAL = "000002-2008_000101-2008_000101:chair"


@pytest.fixture(scope="module")
def spair(chair_root, tmp_path_factory) -> Path:
    from featurenerf_ns.data.instances import CategoryData

    return write_spair_fixture(tmp_path_factory.mktemp("spair"), CategoryData(chair_root, "chair"))


def _copy(spair: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "SPair-71k"
    shutil.copytree(spair, dst)
    return dst


def _one_line(err: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for n in names:
        assert n in msg, msg


def test_pck_by_hand_counts_a_tie_at_the_threshold():
    bbox = np.array([10.0, 20.0, 60.0, 50.0])  # w 50, h 30: threshold 0.1 x 50 = 5 px
    assert pck_threshold(bbox) == 5.0 and pck_threshold(bbox, 0.05) == 2.5
    gt = np.array([[10.0, 10.0], [10.0, 10.0], [10.0, 10.0], [0.0, 0.0]])
    pred = np.array([[13.0, 14.0], [13.01, 14.0], [10.0, 10.0], [6.0, 8.0]])  # distances 5 (tie), 5.008, 0, 10
    np.testing.assert_array_equal(pck_correct(pred, gt, bbox, 0.1), [True, False, True, False])
    np.testing.assert_array_equal(pck_correct(pred, gt, bbox, 0.05), [False, False, True, False])
    np.testing.assert_array_equal(pck_correct(pred, gt, bbox, 0.2), [True, True, True, True])  # 10 <= 0.2 x 50
    with pytest.raises(ValueError):
        pck_correct(pred[:2], gt, bbox)


def test_reader_and_accumulator_on_the_fixture(spair):
    ds = SPairDataset(spair, "test")
    assert [f.stem for f in ds.pair_files()][:2] == [IDENTICAL, "000001-2008_000101-2008_000202:chair"]  # layout order
    pairs = list(ds.pairs("chair"))
    assert [p.num_keypoints for p in pairs] == [4, 5, 4]
    assert [p.viewpoint_variation for p in pairs] == [1, 0, 2]
    p = pairs[2]
    assert p.src_mask is None and p.trg_mask is not None and p.category == "chair"
    assert p.src_kps.shape == (4, 2) and p.trg_bbox.shape == (4,) and p.kps_ids == ["0", "1", "2", "3"]
    assert p.extra == {"scale_variation": 0, "truncation": 0, "occlusion": 0}
    assert [q.category for q in ds.pairs()] == ["chair", "chair", "chair", "aeroplane"]
    assert len(list(ds.pairs("chair", max_pairs=2))) == 2
    assert spair_category("airplane") == "aeroplane" and spair_category("chair") == "chair"

    # hand-made predictions: pair 0 exact; pair 1: 2 keypoints 0.75 x the 0.1 threshold off (within 0.1, not 0.05),
    # 3 keypoints the threshold + 1 px off (wrong at both)
    acc = PCKAccumulator((0.05, 0.1))
    acc.add(pairs[0], pairs[0].trg_kps.copy())
    side = max(pairs[1].trg_bbox[2] - pairs[1].trg_bbox[0], pairs[1].trg_bbox[3] - pairs[1].trg_bbox[1])
    off = pairs[1].trg_kps + np.array([[0.075 * side, 0]] * 2 + [[0.1 * side + 1, 0]] * 3)
    acc.add(pairs[1], off)
    s = acc.summary()
    assert s["pairs"] == 2 and s["keypoints"] == 9
    assert s["pck"]["0.1"] == pytest.approx(100 * 6 / 9) and s["pck"]["0.05"] == pytest.approx(100 * 4 / 9)
    assert s["pck_per_pair"]["0.1"] == pytest.approx(100 * (1 + 2 / 5) / 2)
    assert s["per_viewpoint_variation"]["1"]["pck"]["0.1"] == 100.0
    assert s["per_viewpoint_variation"]["0"]["pck"]["0.1"] == pytest.approx(40.0)
    assert set(s["per_category"]) == {"chair"}


def test_foreground_and_placement_round_trip(spair, tmp_path):
    p = list(SPairDataset(spair).pairs("chair"))[2]
    # no mask: the box; a mask: only inside the box
    fg, how = spair_foreground(None, p.src_bbox, (190, 220))
    assert how == "bbox" and fg.sum() == (p.src_bbox[2] - p.src_bbox[0] + 1) * (p.src_bbox[3] - p.src_bbox[1] + 1)
    full = np.ones((190, 220), bool)
    fg2, how2 = spair_foreground(full, p.src_bbox, (190, 220))
    assert how2 == "mask" and (fg2 == fg).all()
    side = prepare_side(p.src_image, p.src_mask, p.src_bbox, p.src_imsize, 32, ((16.0, 17.0), 20.0), tmp_path, "s")
    assert side.foreground == "bbox" and side.resolution == 32
    np.testing.assert_allclose(side.to_photo(side.to_model(p.src_kps)), p.src_kps)
    ys, xs = np.nonzero(side.photo.mask)  # the box, scaled to the 20 px typical box
    assert abs(max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) - 20) <= 1.5
    q, outside = query_pixels(np.array([[3.2, 4.9], [-1.0, 5.0], [31.99, 40.0]]), 32)
    np.testing.assert_array_equal(q, [[3.5, 4.5], [0.5, 5.5], [31.5, 31.5]])
    np.testing.assert_array_equal(outside, [False, True, True])


def test_bad_inputs_are_one_line_errors(spair, tmp_path):
    with pytest.raises(FeatureNeRFDataError) as e:
        SPairDataset(tmp_path / "nowhere")
    _one_line(e, "nowhere", "SPair-71k")
    with pytest.raises(FeatureNeRFDataError) as e:
        spair_category("table")
    _one_line(e, "table", "no SPair-71k counterpart")

    root = _copy(spair, tmp_path)
    ann = root / "PairAnnotation" / "test"
    (root / "JPEGImages" / "chair" / "2008_000202.jpg").unlink()
    with pytest.raises(FeatureNeRFDataError) as e:
        list(SPairDataset(root).pairs("chair"))
    _one_line(e, "2008_000202.jpg", "not found", "JPEGImages/chair")

    bad = ann / f"{IDENTICAL}.json"
    good = json.loads(bad.read_text())
    bad.write_text(bad.read_text()[:-5])
    with pytest.raises(FeatureNeRFDataError) as e:
        load_pair(bad, root)
    _one_line(e, bad.name, "malformed JSON")

    for change, words in [
        (dict(category="sofa"), ("'sofa'", "not an SPair-71k category")),
        (dict(src_kps=[[1.0, 2.0, 3.0]] * 4), ("src_kps", "(K, 2)")),
        (dict(trg_kps=good["trg_kps"][:3]), ("differ in length",)),
        (dict(trg_bndbox=[50, 50, 10, 80]), ("trg_bndbox", "x2 > x1")),
    ]:
        bad.write_text(json.dumps({**good, **change}))
        with pytest.raises(FeatureNeRFDataError) as e:
            load_pair(bad, root)
        _one_line(e, bad.name, *words)
    (root / "Layout" / "large" / "test.txt").write_text("000009-x-y:chair\n")
    with pytest.raises(FeatureNeRFDataError) as e:
        SPairDataset(root).pair_files()
    _one_line(e, "test.txt", "000009-x-y:chair")
    shutil.rmtree(root / "PairAnnotation")
    with pytest.raises(FeatureNeRFDataError) as e:
        SPairDataset(root)
    _one_line(e, "PairAnnotation")


def test_spair_cli_end_to_end_on_the_fixture(tiny_run, spair, tmp_path):
    out = tmp_path / "out"
    cmd = [str(EXE), "--load-config", str(tiny_run[0] / "config.yml"), "--spair-root", str(spair),
           "--split", "test", "--max-pairs", "10", "--out", str(out), "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    c = res["counts"]
    assert (c["pairs"], c["keypoints"], c["pairs_skipped"]) == (3, 13, 0)  # the aeroplane pair is not a chair's
    assert c["src_keypoints_outside_crop"] == 1 and c["trg_keypoints_outside_crop"] == 1  # counted, still scored
    assert c["foreground"] == {"mask": 5, "bbox": 1}
    assert res["category"] == "chair" and res["feature"] == "feature" and res["command"].startswith("featurenerf-spair")
    assert set(res["methods"]) == {"model", "teacher-2D"}
    for m in res["methods"].values():
        assert (m["pairs"], m["keypoints"]) == (3, 13)
        vals = [*m["pck"].values(), *m["pck_per_pair"].values()]
        vals += [v for s in m["per_viewpoint_variation"].values() for v in s["pck"].values()]
        assert len(vals) == 6 + 9 and all(0.0 <= v <= 100.0 for v in vals), vals
        assert set(m["per_viewpoint_variation"]) == {"0", "1", "2"}
    # identical source and target photos: every keypoint lands within alpha x box of itself, for both matchers
    same = next(p for p in res["pairs"] if p["pair"] == IDENTICAL)
    pair = load_pair(spair / "PairAnnotation" / "test" / f"{IDENTICAL}.json", spair)
    for m in ("model", "teacher-2D"):
        assert same["correct"][m]["0.1"] == 4, same
        d = np.hypot(*(np.asarray(same["pred"][m]) - pair.trg_kps).T)
        assert (d <= pck_threshold(pair.trg_bbox, 0.1)).all(), d
    assert (out / "pairs.png").stat().st_size > 10_000
    assert "model (feature)" in r.stdout and "teacher-2D" in r.stdout

    r = subprocess.run([*cmd[:3], "--spair-root", str(tmp_path / "missing")], capture_output=True, text=True)
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "missing" in text and "Traceback" not in text, text
