"""featurenerf-edit texture-swap: the procedural ground truth (a part redrawn in another instance's material), the
edit itself (the part's pixels re-coloured from the source field, nothing else touched), the CLI files and metrics,
the evaluation table, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_viewer import _sphere_density


@pytest.fixture(scope="module")
def cat(chair_root):
    from featurenerf_ns.data.instances import CategoryData

    return CategoryData(chair_root, "chair")


def test_truth_redraws_the_dataset_and_changes_only_the_part(cat):
    from featurenerf_ns.data.instances import load_rgba
    from featurenerf_ns.data.procedural.part_swap import dataset_settings, swapped_part_renders

    st = dataset_settings(cat)
    tgt, src = cat.ids("test")[0], cat.ids("train")[0]
    rec = cat.instance(tgt)
    views = [0, 3]
    poses = [rec.poses[v] for v in views]
    own, labels = swapped_part_renders(st, tgt, tgt, "seat", poses, st.resolution, cat.part_names)
    for k, v in enumerate(views):  # the target in its own material is the dataset's render, bit for bit
        np.testing.assert_allclose(own[k], load_rgba(rec.image_paths[v])[..., :3], atol=1e-6)
        # (labels: a handful of centre rays on an edge between two parts' triangles may hit either, as at generation)
        assert (labels[k] == cat.view_annotations(tgt)["parts"][v]).mean() > 0.999
    swapped, _ = swapped_part_renders(st, tgt, src, "seat", poses, st.resolution, cat.part_names)
    seat = labels == cat.part_names.index("seat") + 1
    from scipy.ndimage import binary_dilation

    off = np.abs(swapped - own).max(-1) > 1e-6
    near_seat = np.stack([binary_dilation(m, iterations=2) for m in seat])
    assert not (off & ~near_seat).any()  # only the seat's pixels change (and its anti-aliased rim),
    assert np.abs(swapped[seat] - own[seat]).mean() > 0.01  # which now show the source's seat material
    small, _ = swapped_part_renders(st, tgt, src, "seat", poses[:1], 32, cat.part_names)
    assert small.shape == (1, 32, 32, 3)


@pytest.fixture(scope="module")
def pipeline(tiny_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipe, _, _ = eval_setup(tiny_run[0] / "config.yml", test_mode="test")
    pipe.eval()
    hook = pipe.model.field.register_forward_hook(_sphere_density)  # a known opaque surface (a 4-step model has none)
    yield pipe
    hook.remove()


def test_swap_recolours_the_part_from_source_colours_and_nothing_else(pipeline, cat):
    import featurenerf_ns.scripts.edit as ed
    from featurenerf_ns.editing.texture_swap import source_part
    from featurenerf_ns.scripts.edit import _setup, run_swap
    from featurenerf_ns.viewer.conditionings import ConditioningCache

    ed_load = ed.load_featurenerf
    ed.load_featurenerf = lambda config: (pipeline, 4)
    try:
        s = _setup(None, "auto")
    finally:
        ed.load_featurenerf = ed_load
    src, tgt = cat.ids("val")[0], cat.ids("test")[0]
    out, cams = run_swap(s, src, tgt, "seat", (1, 5))
    label = cat.part_names.index("seat") + 1
    assert out.edited.shape == out.rgb.shape == (2, s.resolution, s.resolution, 3)
    region = out.labels == label
    assert region.any() and (out.labels[out.accumulation < 0.5] == 0).all()
    np.testing.assert_array_equal(out.edited[~region], out.rgb[~region])
    # every edited pixel is acc x the source field's colour at one of the source's seat points
    ann = cat.shape_annotations(src)
    conds = ConditioningCache(pipeline.datamanager, pipeline.model)
    sc = conds.get(src, (0,), None)
    with pipeline.model.precision_override("float32"):
        sp = source_part(pipeline.model, sc.sources, sc.maps, ann["points"], ann["point_labels"], s.feature)
    seat_rgb = sp.rgb[sp.labels == label].numpy()
    got = out.edited[region] / np.maximum(out.accumulation[region][:, None], 1e-6)
    d = np.abs(got[:, None, :] - seat_rgb[None]).max(-1).min(1)
    assert d.max() < 1e-4, d.max()


def test_texture_swap_cli_writes_strip_orbit_and_metrics(pipeline, tiny_run, cat, tmp_path, monkeypatch):
    import featurenerf_ns.scripts.edit as ed

    monkeypatch.setattr(ed, "load_featurenerf", lambda config: (pipeline, 4))
    src, tgt = cat.ids("val")[0], cat.ids("test")[0]
    ed.TextureSwap(load_config=tiny_run[0] / "config.yml", source=src, target=tgt, part="seat", views=(1, 5),
                   orbit=4, out=tmp_path / "e").main()  # fmt: skip
    info = json.loads((tmp_path / "e" / "swap.json").read_text())
    m = info["metrics"]
    assert 0.0 <= m["region_iou"] <= 1.0 and np.isfinite(m["psnr_edited"]) and m["part_pixels"] > 0
    with Image.open(tmp_path / "e" / "orbit.gif") as im:
        assert im.n_frames == 4
    with Image.open(tmp_path / "e" / "strip.png") as im:
        assert im.height > 3 * 32 * 3  # three rows: target, edited, truth
    ed.Evaluate(load_config=(tiny_run[0] / "config.yml",) * 2, names=("a", "b"), pairs=2, views=(1,),
                out=tmp_path / "ev").main()  # fmt: skip
    res = json.loads((tmp_path / "ev" / "texture_swap.json").read_text())
    assert len(res["pairs"]) == 2 and res["summary"]["a"] == res["summary"]["b"]  # the same model twice
    assert "| a (step 4) |" in (tmp_path / "ev" / "texture_swap.md").read_text()
    assert (tmp_path / "ev" / "texture_swap_example.png").is_file()


def test_texture_swap_errors_are_one_line(pipeline, tiny_run, cat, tmp_path, monkeypatch):
    import featurenerf_ns.scripts.edit as ed
    from featurenerf_ns.data.layout import FeatureNeRFDataError
    from featurenerf_ns.editing.texture_swap import TextureSwapError

    monkeypatch.setattr(ed, "load_featurenerf", lambda config: (pipeline, 4))
    args = dict(load_config=tiny_run[0] / "config.yml", source=cat.ids("val")[0], target=cat.ids("test")[0], orbit=0)
    with pytest.raises(TextureSwapError, match="has parts"):
        ed.TextureSwap(**args, part="wing", out=tmp_path / "x").main()
    with pytest.raises(FeatureNeRFDataError, match="no such instance"):
        ed.TextureSwap(**{**args, "source": "inst_9999"}, out=tmp_path / "x").main()
    assert not (tmp_path / "x" / "swap.json").exists()
