"""featurenerf-infer: a photo's foreground (alpha / GrabCut), its placement like a training render, and the transfer
of a reference's keypoints and parts onto it; one-line errors for photos it cannot use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurenerf_ns.data.photo import PhotoError, prepare_photo, typical_box


def _render(cat, inst: str, view: int) -> np.ndarray:
    """(H, W, 4) uint8 render of the dataset (RGBA, object on transparent)."""
    return np.asarray(Image.open(cat.instance(inst).image_paths[view]).convert("RGBA"))


def _on_canvas(rgba: np.ndarray, size=(180, 150), scale=1.3, at=(20, 12), background=(245, 245, 240)):
    """The render rescaled by ``scale`` and pasted at ``at`` on a plain canvas: (RGB uint8, true mask bool)."""
    im = Image.fromarray(rgba)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    canvas = Image.new("RGB", size, background)
    canvas.paste(im, at, im)
    mask = np.zeros(size[::-1], bool)
    a = np.asarray(im)[..., 3] > 127
    mask[at[1] : at[1] + a.shape[0], at[0] : at[0] + a.shape[1]] = a[: size[1] - at[1], : size[0] - at[0]]
    return np.asarray(canvas), mask


@pytest.fixture(scope="module")
def cat(chair_root):
    from featurenerf_ns.data.instances import CategoryData

    return CategoryData(chair_root, "chair")


def test_grabcut_finds_a_render_pasted_on_a_plain_background_saved_as_jpeg(cat, tmp_path):
    inst = cat.ids("test")[0]
    rgb, truth = _on_canvas(_render(cat, inst, 2))
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=90)
    box = ((16.0, 17.0), 20.0)
    photo = prepare_photo(tmp_path / "p.jpg", 32, box)
    assert photo.foreground == "grabcut"
    iou = (photo.photo_mask & truth).sum() / (photo.photo_mask | truth).sum()
    assert iou > 0.9, iou
    # placed like the renders: the object's box in the model input is the target box (to a pixel)
    ys, xs = np.nonzero(photo.mask)
    side = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    assert abs(side - 20) <= 1.5, side
    assert abs((xs.min() + xs.max() + 1) / 2 - 16) <= 1 and abs((ys.min() + ys.max() + 1) / 2 - 17) <= 1
    outside = np.ones((32, 32), bool)  # beyond the target box (+1 px): black, like the training renders' background
    outside[17 - 11 : 17 + 11, 16 - 11 : 16 + 11] = False
    assert (photo.image[outside] == 0).all() and photo.image[~outside].max() > 0.2
    xy = np.array([[3.0, 4.5], [170.0, 140.0]])
    np.testing.assert_allclose(photo.to_photo(photo.to_model(xy)), xy)


def test_alpha_is_the_mask_and_a_render_placed_on_its_own_box_is_itself(cat, tmp_path):
    inst = cat.ids("test")[0]
    rgba = _render(cat, inst, 0)
    Image.fromarray(rgba).save(tmp_path / "r.png")
    alpha = rgba[..., 3] > 127
    R = 32
    photo = prepare_photo(tmp_path / "r.png", R, typical_box([alpha], R))
    assert photo.foreground == "alpha"
    np.testing.assert_array_equal(photo.photo_mask, alpha)
    assert photo.scale == pytest.approx(R / rgba.shape[1])
    # the identity placement: the model input is the area-downsampled render on black
    ref = np.asarray(Image.fromarray(rgba).resize((R, R), Image.BOX), dtype=np.float32) / 255.0
    ref = ref[..., :3] * ref[..., 3:]
    assert np.abs(photo.image - ref).mean() < 0.02, np.abs(photo.image - ref).mean()


def test_unusable_photos_fail_with_one_line_errors(tmp_path):
    box = ((16.0, 16.0), 20.0)
    Image.new("RGB", (64, 64), (250, 250, 250)).save(tmp_path / "blank.jpg")
    with pytest.raises(PhotoError, match="no foreground found"):
        prepare_photo(tmp_path / "blank.jpg", 32, box)
    small = np.zeros((60, 60, 4), np.uint8)
    small[30:38, 30:38] = (200, 20, 20, 255)
    Image.fromarray(small).save(tmp_path / "small.png")
    with pytest.raises(PhotoError, match="only 8 px across"):
        prepare_photo(tmp_path / "small.png", 32, box)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(PhotoError, match="not a readable image"):
        prepare_photo(tmp_path / "text.png", 32, box)
    with pytest.raises(PhotoError, match="no such image file"):
        prepare_photo(tmp_path / "missing.png", 32, box)
    full = np.zeros((40, 40, 4), np.uint8)
    full[..., 3] = 255
    full[:1, :1, 3] = 0  # an alpha channel that is opaque almost everywhere
    Image.fromarray(full).save(tmp_path / "full.png")
    with pytest.raises(PhotoError, match="fills"):
        prepare_photo(tmp_path / "full.png", 32, box)
    Image.new("RGB", (40, 40), (10, 10, 10)).save(tmp_path / "rgb.png")
    with pytest.raises(PhotoError, match="no alpha channel"):
        prepare_photo(tmp_path / "rgb.png", 32, box, how="alpha")
    for e in ("blank.jpg", "text.png"):
        try:
            prepare_photo(tmp_path / e, 32, box)
        except PhotoError as err:
            assert "\n" not in str(err) and e in str(err)


@pytest.fixture(scope="module")
def pipeline(tiny_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipe, _, _ = eval_setup(tiny_run[0] / "config.yml", test_mode="test")
    pipe.eval()
    return pipe


def test_infer_transfers_keypoints_and_parts_onto_a_jpeg(pipeline, tiny_run, cat, tmp_path, monkeypatch):
    import featurenerf_ns.scripts.infer as inf

    monkeypatch.setattr(inf, "load_featurenerf", lambda config: (pipeline, 4))
    inst = pipeline.datamanager.eval_ids[0]
    rgb, truth = _on_canvas(_render(cat, inst, 0), scale=1.1, at=(30, 5))
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=92)
    ref = cat.ids("val")[0] if cat.ids("val") else cat.ids("test")[-1]
    inf.Infer(load_config=tiny_run[0] / "config.yml", image=tmp_path / "photo.jpg", reference=ref,
              out=tmp_path / "o").main()  # fmt: skip
    out = json.loads((tmp_path / "o" / "result.json").read_text())
    assert out["foreground"] == "grabcut" and out["reference"] == ref and out["feature"] == "feature"
    assert out["photo_size"] == [180, 150]
    labels = np.asarray(Image.open(tmp_path / "o" / "part_labels.png"))
    mask = labels > 0  # every foreground pixel of the photo gets a part, nothing else does
    box = ((out["placement"]["model_centre"][0], out["placement"]["model_centre"][1]), 1.0)  # (only the mask is used)
    np.testing.assert_array_equal(mask, prepare_photo(tmp_path / "photo.jpg", 32, box).photo_mask)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.85, iou  # and that mask is the object's
    ann = cat.view_annotations(ref)
    assert set(np.unique(labels[mask]).tolist()) <= set(np.unique(ann["parts"][0][ann["parts"][0] > 0]).tolist())
    assert sum(out["part_pixels"].values()) == int(mask.sum())
    assert set(out["part_pixels"]) <= set(cat.part_names)
    vis = np.flatnonzero(ann["kp_visible"][0])
    assert [k["id"] for k in out["keypoints"]] == vis.tolist() and len(vis) > 0
    for k in out["keypoints"]:  # each lands on a foreground pixel of the photo
        assert mask[int(k["y"]), int(k["x"])], k
        assert -1.0 <= k["similarity"] <= 1.0 + 1e-5
    with Image.open(tmp_path / "o" / "overlay.png") as im:
        assert im.width > 800 and len(set(np.asarray(im.convert("L")).ravel().tolist())) > 20
    with Image.open(tmp_path / "o" / "input.png") as im:
        assert im.size == tuple(pipeline.datamanager.instance(ref).hw[::-1])


def test_infer_cli_errors_are_one_line(tiny_run, tmp_path):
    exe = Path(sys.executable).parent / "featurenerf-infer"
    Image.new("RGB", (64, 64), (250, 250, 250)).save(tmp_path / "blank.jpg")
    r = subprocess.run(
        [str(exe), "--load-config", str(tiny_run[0] / "config.yml"), "--image", str(tmp_path / "blank.jpg"),
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "no foreground found" in text and "blank.jpg" in text and "Traceback" not in text, text
    assert not (tmp_path / "o" / "result.json").exists()
