"""CO3D v2 -> FeatureNeRF layout (featurenerf_ns.data.co3d) and the ``co3d-data`` dataparser, on a fixture in the
exact CO3D layout (tests/co3d_fixture.py)."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from co3d_fixture import write_co3d_fixture

from featurenerf_ns.data.co3d import (
    CONVERSION_FILE,
    Co3DSettings,
    axes_intersection,
    convert_category,
    opengl_c2w,
    pixel_intrinsics,
)
from featurenerf_ns.data.instances import CategoryData, load_rgba
from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.procedural.generate import GeneratorSettings, build_scene
from featurenerf_ns.data.procedural.render import Intrinsics, Raycaster, render_view

QUICK = Co3DSettings(image_size=48, min_frames=4)


@pytest.fixture(scope="module")
def co3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d")
    return root, write_co3d_fixture(root)


def test_pixel_intrinsics_by_hand():
    # ndc_isotropic, 200 x 100 (W x H): s = 50; fx = 2 * 50, cx = 100 - 0.2 * 50 = 90, cy = 50 + 0.1 * 50 = 55
    vp = {"focal_length": [2.0, 2.2], "principal_point": [0.2, -0.1], "intrinsics_format": "ndc_isotropic"}
    assert pixel_intrinsics(vp, (100, 200), "x") == pytest.approx((100.0, 110.0, 90.0, 55.0))
    # ndc_norm_image_bounds: x scaled by W/2 = 100, y by H/2 = 50
    vp["intrinsics_format"] = "ndc_norm_image_bounds"
    assert pixel_intrinsics(vp, (100, 200), "x") == pytest.approx((200.0, 110.0, 80.0, 55.0))
    vp["intrinsics_format"] = "screen"
    with pytest.raises(FeatureNeRFDataError, match="unknown intrinsics_format"):
        pixel_intrinsics(vp, (100, 200), "frame_annotations.jgz (entry 3)")


def test_camera_conversion_projects_like_pytorch3d():
    """A point in front of a PyTorch3D camera (x_cam = R^T x + T, +x left, +y up, +z forward) lands on the same
    pixel through the OpenGL camera-to-world."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R, T = q * np.sign(np.linalg.det(q)), np.array([0.1, -0.2, 3.0])
    x = rng.normal(scale=0.3, size=3)
    xc = R.T @ x + T
    fx, fy, cx, cy = 100.0, 110.0, 64.0, 50.0
    u_p3d, v_p3d = cx - fx * xc[0] / xc[2], cy - fy * xc[1] / xc[2]
    c2w = opengl_c2w(R, T)
    xg = c2w[:3, :3].T @ (x - c2w[:3, 3])  # OpenGL camera frame: looks down -z, +y up
    u_gl, v_gl = cx + fx * xg[0] / -xg[2], cy - fy * xg[1] / -xg[2]
    assert (u_gl, v_gl) == pytest.approx((u_p3d, v_p3d))


def test_axes_intersection():
    target = np.array([0.3, -0.2, 0.5])
    centres = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [-1.0, -1.0, 1.0]])
    assert axes_intersection(centres, target - centres) == pytest.approx(target)


def test_conversion_geometry_matches_a_direct_render(tmp_path):
    """The converted crops are the object seen through the converted cameras: a direct Embree render of the mesh,
    moved into the normalised frame, overlaps each crop's alpha (IoU) with no systematic shift."""
    seqs = write_co3d_fixture(tmp_path, scale=4)
    out, cat = convert_category(tmp_path / "chair", None, Co3DSettings(image_size=64, min_frames=4), progress=False)
    rep = json.loads((out / CONVERSION_FILE).read_text())
    data = CategoryData(out, cat)
    seq = seqs["seq_a"]
    n = rep["sequences"]["seq_a"]["normalisation"]
    assert n["centre_source"] == "pointcloud"
    c, s, Q = np.array(n["centre"]), n["scale"], np.array(n["rotation"])
    scene = build_scene(GeneratorSettings(category="chair", num_instances=8), seq.index)
    caster = Raycaster(s * (seq.to_world(scene.vertices) - c) @ Q.T, scene.faces)
    rec = data.instance("seq_a")
    K = Intrinsics.from_angle(rec.camera_angle_x, rec.width, rec.height)
    ys, xs = np.mgrid[:64, :64]
    ious, shifts = [], []
    for pose, path in zip(rec.poses, rec.image_paths):
        a = load_rgba(path)[..., 3]
        b = render_view(caster, scene.face_normals, scene.face_labels, scene.face_materials, scene.materials, pose, K,
                        supersample=4).rgba[..., 3] / 255.0  # fmt: skip
        ious.append(((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum())
        shifts.append(
            [(a * xs).sum() / a.sum() - (b * xs).sum() / b.sum(), (a * ys).sum() / a.sum() - (b * ys).sum() / b.sum()]
        )
    assert min(ious) > 0.93, ious
    assert np.abs(np.mean(shifts, 0)).max() < 0.25, shifts
    # normalisation: median camera distance 1.3, object (point-cloud median) at the origin, gravity up -> +z
    assert np.median(np.linalg.norm(rec.poses[:, :3, 3], axis=1)) == pytest.approx(1.3, abs=0.02)
    assert (Q @ (seq.Q0.T @ np.array([0.0, 0.0, 1.0])))[2] > 0.97
    # virtual cameras look at the centre
    fwd = -rec.poses[:, :3, 2]
    to_c = -rec.poses[:, :3, 3] / np.linalg.norm(rec.poses[:, :3, 3], axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", fwd, to_c) == pytest.approx(np.ones(len(fwd)))


def test_splits_filters_and_report(co3d_root, tmp_path):
    root, _ = co3d_root
    out, cat = convert_category(root / "chair", None, QUICK, cache_dir=tmp_path, progress=False)
    data = CategoryData(out, cat)
    rep = json.loads((out / CONVERSION_FILE).read_text())
    assert data.ids("train") == ["seq_a", "seq_b"] and data.ids("test") == ["seq_c"]
    assert rep["not_in_set_lists"] == 1  # seq_x
    assert rep["held_out_borrowed_from_train"] == ["val"] and data.ids("val") == ["seq_b"]
    for s in ("seq_a", "seq_b", "seq_c"):
        e = rep["sequences"][s]
        assert e["kept"] and e["frames"] == 12 and e["views"] == 11  # frame 3 looks away: dropped
        assert e["dropped"]["small"] + e["dropped"]["cut"] == 1
    rec = data.instance("seq_a")
    assert len(rec.image_paths) == 11 and (rec.width, rec.height) == (48, 48)
    img = load_rgba(rec.image_paths[0])
    assert img[..., 3].mean() > QUICK.min_foreground and np.all(
        img[img[..., 3] == 0][:, :3] == 0
    )  # composited on black
    # num_views keeps evenly spaced frames; min_frames drops sequences
    out2, _ = convert_category(root / "chair", None, Co3DSettings(image_size=32, num_views=5, min_frames=4),
                               cache_dir=tmp_path, progress=False)  # fmt: skip
    assert len(CategoryData(out2, cat).instance("seq_a").image_paths) == 5
    with pytest.raises(FeatureNeRFDataError, match="no CO3D train sequence passed"):
        convert_category(root / "chair", None, Co3DSettings(image_size=32, min_frames=40), cache_dir=tmp_path,
                         progress=False)  # fmt: skip


def test_cache_is_reused_and_a_killed_conversion_resumes(co3d_root, tmp_path):
    root, _ = co3d_root
    out, _ = convert_category(root / "chair", None, QUICK, cache_dir=tmp_path, progress=False)
    stamp = (out / CONVERSION_FILE).stat().st_mtime_ns
    assert convert_category(root, "chair", QUICK, cache_dir=tmp_path, progress=False)[0] == out
    assert (out / CONVERSION_FILE).stat().st_mtime_ns == stamp
    # simulate a conversion killed after its first sequence: the rest is converted, the first one is not redone
    partial = out.parent / f"{out.name}.partial"
    shutil.move(str(out), str(partial))
    (partial / CONVERSION_FILE).unlink()
    lines = (partial / "sequences.jsonl").read_text().splitlines()
    (partial / "sequences.jsonl").write_text(lines[0] + "\n")
    first = json.loads(lines[0])["sequence"]
    cam = partial / "camera" / "chair" / f"{first}.json"
    cam_stamp = cam.stat().st_mtime_ns
    out2, _ = convert_category(root / "chair", None, QUICK, cache_dir=tmp_path, progress=False)
    assert out2 == out and not partial.exists() and (out / CONVERSION_FILE).is_file()
    assert (out / "camera" / "chair" / f"{first}.json").stat().st_mtime_ns == cam_stamp


def _copy(co3d_root, tmp_path):
    root, _ = co3d_root
    dst = tmp_path / "co3d"
    shutil.copytree(root, dst, ignore=shutil.ignore_patterns("_featurenerf_ns"))
    return dst


def test_errors_name_the_file(co3d_root, tmp_path):
    with pytest.raises(FeatureNeRFDataError, match="not a CO3D category folder"):
        convert_category(tmp_path, None, QUICK, progress=False)
    root = _copy(co3d_root, tmp_path)
    fa = root / "chair" / "frame_annotations.jgz"
    with gzip.open(fa, "rt") as f:
        frames = json.load(f)
    broken = [dict(frames[0], viewpoint={"R": [[1, 0], [0, 1]], "T": [0, 0, 1], "focal_length": [1, 1],
                                        "principal_point": [0, 0]})] + frames[1:]  # fmt: skip
    with gzip.open(fa, "wt") as f:
        json.dump(broken, f)
    with pytest.raises(FeatureNeRFDataError, match=r"frame_annotations.jgz \(entry 0\): viewpoint R must be"):
        convert_category(root / "chair", None, QUICK, progress=False)
    fa.write_bytes(b"not gzip")
    with pytest.raises(FeatureNeRFDataError, match="frame_annotations.jgz: unreadable CO3D frame annotations"):
        convert_category(root / "chair", None, QUICK, progress=False)
    with gzip.open(fa, "wt") as f:
        json.dump(frames, f)
    (root / "chair" / "seq_a" / "images" / "frame000001.jpg").unlink()
    with pytest.raises(FeatureNeRFDataError, match="frame000001.jpg: CO3D image not found"):
        convert_category(root / "chair", None, QUICK, progress=False)


def test_registered_dataparser(co3d_root, tmp_path):
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    from featurenerf_ns.data.co3d_dataparser import Co3DDataParserConfig

    assert isinstance(discover_dataparsers()[0]["co3d-data"], Co3DDataParserConfig)
    root, _ = co3d_root
    cfg = Co3DDataParserConfig(data=root / "chair", conversion=QUICK, cache_dir=tmp_path)
    outputs = cfg.setup().get_dataparser_outputs("train")
    assert outputs.metadata["instance_ids"] == ["seq_a", "seq_b"]
    assert len(outputs.image_filenames) == 22 and outputs.cameras.width[0, 0] == 48


def test_ns_train_and_ns_eval_on_co3d(co3d_root, tmp_path):
    """``ns-train featurenerf-tiny ... co3d-data --data <root>/chair`` trains a few steps (teacher cache included)
    and ``ns-eval`` reports novel-view PSNR of the held-out sequence; there are no correspondence annotations."""
    from _runs import eval_run, train_run

    root, _ = co3d_root
    run, log = train_run(root, tmp_path, "co3d", 3, data_args=("co3d-data", "--min-frames", "4", "--cache-dir",
                                                                str(tmp_path / "cache")))  # fmt: skip
    assert (run / "nerfstudio_models").is_dir()
    (converted,) = [p.parent for p in (tmp_path / "cache").glob(f"chair-*/{CONVERSION_FILE}")]
    assert len(list((converted / "teacher_cache").rglob("*.npy"))) >= 2  # the two train sequences' teacher maps
    cfg = (run / "config.yml").read_text()
    assert "Co3DDataParserConfig" in cfg
    results = eval_run(run, tmp_path / "eval.json")
    assert np.isfinite(results["psnr"]) and results["psnr"] > 0
