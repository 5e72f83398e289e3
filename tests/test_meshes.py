"""``featurenerf-data meshes``: real meshes shipped inside a registry package (pymeshlab's sample meshes, installed
with nerfstudio) rendered into the layout with the benchmark's cameras; views, part maps and keypoints checked exactly
as the procedural data is; the formats (OBJ groups + materials, GLB nodes, label files, textures, vertex colours);
normalisation and rotation; resumability; one-line errors; a model trained on procedural chairs evaluated on them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from _alignment import check_keypoints_project, check_part_maps, check_rays_hit_keypoints

from featurenerf_ns.data.instances import CategoryData, load_rgba
from featurenerf_ns.data.layout import FeatureNeRFDataError, Layout
from featurenerf_ns.data.meshes import mesh_settings, render_meshes, rotation_matrix
from featurenerf_ns.data.procedural.generate import LONGEST_EDGE, MAX_RADIUS
from featurenerf_ns.data.procedural.render import Raycaster

SPEC = importlib.util.find_spec("pymeshlab")
SAMPLES = Path(list(SPEC.submodule_search_locations)[0]) / "tests" / "sample_meshes" if SPEC else None
REAL = ("colored_airplane.ply", "airplane.obj", "cow.obj", "bone.ply", "bunny10k_textured.obj")
"""Real scanned / modelled meshes of pymeshlab 2025.7 (vertex-coloured PLY, plain OBJ, textured OBJ with .mtl + PNG)."""
ROTATE = (90.0, 0.0, 0.0)  # their y axis is up; the benchmark's is +z
RENDER = dict(resolution=128, train_views=5, eval_views=10, num_points=1024)
needs_samples = pytest.mark.skipif(
    SAMPLES is None or not SAMPLES.is_dir(), reason="pymeshlab sample meshes not installed"
)


def label_rule(vertices: np.ndarray, faces: np.ndarray) -> list:
    """Part of each triangle by its centroid along the mesh's x axis: left / middle / right thirds of the extent."""
    c = vertices[faces].mean(1)[:, 0]
    lo, hi = vertices[:, 0].min(), vertices[:, 0].max()
    t = np.digitize(c, [lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3])
    return [("left", "middle", "right")[k] for k in t]


KEYPOINT_RAYS = {"top": (1, -1), "bottom": (1, 1), "front": (2, 1), "back": (2, -1), "left": (0, 1), "right": (0, -1)}
"""Keypoint name -> (axis, direction) of a ray through the bounding-box centre from outside: the keypoint is where it
first meets the surface (absent when it misses)."""


def keypoint_rule(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Surface points of the mesh (its own frame) met by rays along its axes through its bounding-box centre, kept
    where the face hit is in the keypoint's part (:func:`label_rule`: left / right for those, else middle), so that a
    keypoint has one part across the category, as in the benchmark."""
    caster = Raycaster(vertices, faces)
    labels = label_rule(vertices, faces)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    out = []
    for name, (axis, sign) in KEYPOINT_RAYS.items():
        d = np.zeros(3)
        d[axis] = sign
        origin = centre - d * 10 * np.ptp(vertices, axis=0).max()
        prim, t = caster.first_hit(origin[None], d[None])
        if prim[0] >= 0 and labels[prim[0]] == (name if name in ("left", "right") else "middle"):
            out.append({"name": name, "xyz": (origin + t[0] * d).tolist()})
    return {"keypoints": out}


@pytest.fixture(scope="module")
def real_meshes(tmp_path_factory) -> Path:
    """pymeshlab's real meshes, each with a label file (by :func:`label_rule`) and keypoints (:func:`keypoint_rule`)
    computed from the triangles exactly as trimesh loads them (the documented order of label files)."""
    if SAMPLES is None or not SAMPLES.is_dir():
        pytest.skip("pymeshlab sample meshes not installed")
    d = tmp_path_factory.mktemp("real_meshes")
    for name in REAL + ("bunny10k_textured.mtl", "TextureDouble_A.png"):
        shutil.copy(SAMPLES / name, d / name)
    for name in REAL:
        kw = dict(group_material=False) if name.endswith(".obj") else {}
        scene = trimesh.load(str(d / name), force="scene", process=False, **kw)
        meshes = [scene.geometry[scene.graph[n][1]] for n in scene.graph.nodes_geometry]
        assert len(meshes) == 1 and np.allclose(scene.graph[scene.graph.nodes_geometry[0]][0], np.eye(4))
        v, f = np.asarray(meshes[0].vertices), np.asarray(meshes[0].faces)
        (d / f"{Path(name).stem}.labels.txt").write_text("\n".join(label_rule(v, f)) + "\n")
        (d / f"{Path(name).stem}.keypoints.json").write_text(json.dumps(keypoint_rule(v, f)))
    return d


@pytest.fixture(scope="module")
def rendered(real_meshes, tmp_path_factory) -> Path:
    """The real meshes rendered as category ``scans``: <root>/img/scans, ..."""
    root = tmp_path_factory.mktemp("mesh_data")
    render_meshes(root, mesh_settings(real_meshes, "scans", rotate=ROTATE, **RENDER))
    return root


@needs_samples
def test_real_meshes_render_with_aligned_views_parts_and_keypoints(rendered):
    data = CategoryData(rendered / "scans")
    assert data.part_names == ["left", "middle", "right"]
    assert sorted(data.keypoint_names) == sorted(KEYPOINT_RAYS)
    assert sorted(sum(data.splits.values(), [])) == sorted(Path(n).stem for n in REAL)
    for inst in sum(data.splits.values(), []):
        rec, views = data.instance(inst), data.view_annotations(inst)
        assert len(rec.poses) == (5 if rec.split == "train" else 10) and rec.width == 128
        alpha = np.stack([load_rgba(p)[..., 3] for p in rec.image_paths])
        assert ((views["parts"] > 0) <= (alpha > 0)).all()  # a labelled pixel is covered
        assert ((views["depth"] > 0) == (views["parts"] > 0)).all()
    splits = ("train", "val", "test")
    assert check_keypoints_project(rendered / "scans", splits) > 100
    assert check_rays_hit_keypoints(rendered / "scans", splits) > 30
    total, _ = check_part_maps(rendered / "scans", splits)
    assert total > 5000


@needs_samples
def test_normalisation_rotation_and_colours(rendered, real_meshes):
    data = CategoryData(rendered / "scans")
    R = rotation_matrix(ROTATE)
    assert np.allclose(R @ [0, 1, 0], [0, 0, 1])  # y up -> +z up
    for inst in sum(data.splits.values(), []):
        shape, meta = data.shape_annotations(inst), data.instance_meta(inst)
        v = shape["mesh_vertices"].astype(np.float64)
        ext = v.max(0) - v.min(0)
        assert np.linalg.norm(v, axis=1).max() <= MAX_RADIUS + 1e-5
        assert ext.max() <= LONGEST_EDGE + 1e-5 and np.allclose((v.max(0) + v.min(0)) / 2, 0, atol=1e-5)
        # longest edge 0.6, unless a corner would then leave the 0.49 sphere: shrunk until it touches it
        assert np.isclose(ext.max(), LONGEST_EDGE, atol=1e-5) or np.isclose(
            np.linalg.norm(v, axis=1).max(), MAX_RADIUS, atol=1e-5
        )
        # the keypoints went through the same transform as the vertices (rotated y up -> z up)
        kp = dict(zip(data.keypoint_names, shape["keypoints"].astype(np.float64)))
        if np.isfinite(kp["top"]).all() and np.isfinite(kp["bottom"]).all():
            assert kp["top"][2] > kp["bottom"][2]
        src = json.loads((real_meshes / f"{inst}.keypoints.json").read_text())["keypoints"]
        n = meta["normalisation"]
        xyz = np.array(src[0]["xyz"]) @ np.array(n["rotation"]).T
        assert np.allclose((xyz - n["centre"]) * n["scale"], kp[src[0]["name"]], atol=1e-5)
    colours = {i: data.instance_meta(i)["colour"] for i in sum(data.splits.values(), [])}
    assert colours["colored_airplane"] == ["vertex colours"] and colours["bunny10k_textured"] == ["texture"]
    assert colours["cow"] == ["grey (no colour)"]
    rgb = [load_rgba(data.instance(i).image_paths[0])[..., :3] for i in ("colored_airplane", "bunny10k_textured")]
    assert all(float(np.ptp(x.reshape(-1, 3)[x.reshape(-1, 3).sum(1) > 0], axis=0).max()) > 0.3 for x in rgb)


def _write_obj_with_groups(d: Path) -> None:
    """Two boxes as OBJ groups 'seat' and 'back', in two materials (trimesh names them '<group>_<material>')."""
    lines = ["mtllib parts.mtl"]
    offset = 0
    for group, mat, (dx, dz, sx, sz) in (("seat", "red", (0, 0, 1.0, 0.2)), ("back", "blue", (0, 0.5, 1.0, 1.0))):
        box = trimesh.creation.box(extents=(1.0, sz if group == "seat" else 0.2, sx if group == "back" else 0.2))
        box.apply_translation((dx, -0.4 if group == "back" else 0.0, dz))
        lines += [f"g {group}", f"usemtl {mat}"]
        lines += [f"v {x} {y} {z}" for x, y, z in box.vertices]
        lines += [f"f {a + 1 + offset} {b + 1 + offset} {c + 1 + offset}" for a, b, c in box.faces]
        offset += len(box.vertices)
    (d / "chairish.obj").write_text("\n".join(lines) + "\n")
    (d / "parts.mtl").write_text("newmtl red\nKd 0.9 0.1 0.1\nnewmtl blue\nKd 0.1 0.1 0.9\n")


def test_obj_groups_and_glb_meshes_become_parts(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write_obj_with_groups(src)
    scene = trimesh.Scene()
    seat = trimesh.creation.box(extents=(1.0, 1.0, 0.2))
    leg = trimesh.creation.cylinder(radius=0.1, height=1.0)
    leg.visual.face_colors = [30, 200, 30, 255]
    up = trimesh.transformations.translation_matrix((0, 0, 0.5))
    scene.add_geometry(seat, node_name="seat_node", geom_name="seat", transform=up)
    scene.add_geometry(leg, node_name="leg_node", geom_name="back")
    scene.export(str(src / "stool.glb"))
    settings = mesh_settings(src, "furniture", resolution=48, train_views=2, eval_views=3, num_points=256)
    assert settings.parts == ("back", "seat")
    render_meshes(tmp_path / "out", settings)
    data = CategoryData(tmp_path / "out" / "furniture")
    for inst in ("chairish", "stool"):
        shape = data.shape_annotations(inst)
        assert set(np.unique(shape["face_labels"])) == {1, 2}
        views = data.view_annotations(inst)
        assert {1, 2} <= set(np.unique(views["parts"]))
    # the OBJ's materials colour its parts: red seat pixels, blue back pixels
    rec = data.instance("chairish")
    rgb, parts = load_rgba(rec.image_paths[0])[..., :3], data.view_annotations("chairish")["parts"][0]
    assert rgb[parts == 2][:, 0].mean() > 2 * rgb[parts == 2][:, 2].mean()
    assert rgb[parts == 1][:, 2].mean() > 2 * rgb[parts == 1][:, 0].mean()


def test_rerun_is_noop_and_changed_settings_are_refused(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write_obj_with_groups(src)
    settings = mesh_settings(src, "c", resolution=32, train_views=2, eval_views=2, num_points=128)
    render_meshes(tmp_path / "out", settings)
    cam = Layout(tmp_path / "out", "c").camera_file("chairish")
    mtime = cam.stat().st_mtime_ns
    render_meshes(tmp_path / "out", settings)
    assert cam.stat().st_mtime_ns == mtime
    turned = mesh_settings(src, "c", rotate=(0.0, 0.0, 90.0), resolution=32, train_views=2, eval_views=2)
    with pytest.raises(FeatureNeRFDataError, match=r"category\.json.*rotate.*--overwrite"):
        render_meshes(tmp_path / "out", turned)


def _one_line(exc, *names):
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for n in names:
        assert n in msg, msg


@needs_samples
def test_bad_meshes_are_one_line_errors(tmp_path):
    def err(d: Path, *names):
        with pytest.raises(FeatureNeRFDataError) as e:
            mesh_settings(d, "x")
        _one_line(e, *names)

    err(tmp_path / "nowhere", "nowhere", "mesh directory not found")
    (tmp_path / "empty").mkdir()
    err(tmp_path / "empty", "no mesh files")

    def copy(d: Path, *names: str) -> None:
        for n in names:
            shutil.copy(SAMPLES / n, d / n)

    cases = {
        "garbage": lambda d: (d / "broken.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01"),
        "points": lambda d: trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(str(d / "cloud.ply")),
        "texture": lambda d: copy(d, "bunny10k_textured.obj", "bunny10k_textured.mtl"),
        "mtl": lambda d: copy(d, "bunny10k_textured.obj"),
        "labels": lambda d: (copy(d, "cow.obj"), (d / "cow.labels.txt").write_text("a\nb\n")),
        "keypoints": lambda d: (
            copy(d, "cow.obj"),
            (d / "cow.keypoints.json").write_text('{"keypoints": [{"name": "nose", "xyz": [1, 2]}]}'),
        ),
        "dupes": lambda d: (copy(d, "cow.obj"), shutil.copy(SAMPLES / "bone.ply", d / "cow.ply")),
    }
    expected = {
        "garbage": ("broken.ply", "unreadable mesh"),
        "points": ("cloud.ply", "no faces"),
        "texture": ("bunny10k_textured.mtl", "TextureDouble_A.png", "not found"),
        "mtl": ("bunny10k_textured.obj", "material library", "not found"),
        "labels": ("cow.labels.txt", "2 labels", "5804 triangles"),
        "keypoints": ("cow.keypoints.json", "entry 0", "xyz"),
        "dupes": ("cow.obj", "cow.ply", "same instance"),
    }
    for case, make in cases.items():
        d = tmp_path / case
        d.mkdir()
        make(d)
        err(d, *expected[case])


def test_cli_renders_and_errors_in_one_line(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write_obj_with_groups(src)
    cmd = [sys.executable, "-m", "featurenerf_ns.scripts.data", "meshes", "--category", "c"]
    cmd += ["--out", str(tmp_path / "o")]
    small = ["--resolution", "32", "--train-views", "2", "--eval-views", "2", "--workers", "1"]
    r = subprocess.run([*cmd, "--input", str(src), *small], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout and (tmp_path / "o" / "splits" / "c.json").is_file()
    r = subprocess.run([*cmd, "--input", str(tmp_path / "nope")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "mesh directory not found" in r.stdout and "\n" not in r.stdout.strip()
    assert "Traceback" not in r.stdout + r.stderr


@needs_samples
def test_model_trained_on_procedural_chairs_evaluates_on_rendered_meshes(tiny_run, rendered, tmp_path):
    """The shared tiny featurenerf run (4 steps on procedural chairs) evaluated by ns-eval on the rendered real meshes:
    its config pointed at --data <mesh category> (PSNR/SSIM + correspondence over the mesh category's pairs)."""
    import yaml
    from _runs import eval_run

    config = yaml.load((tiny_run[0] / "config.yml").read_text(), Loader=yaml.Loader)
    dm = config.pipeline.datamanager
    dm.data = dm.dataparser.data = rendered / "scans"  # checkpoints stay where the run wrote them (absolute path)
    (tmp_path / "config.yml").write_text(yaml.dump(config))
    results = eval_run(tmp_path, tmp_path / "eval.json")
    assert np.isfinite(results["psnr"])
    for task in ("kp2d_cross", "part2d_cross", "kp3d_cross", "part3d_cross"):
        keys = [k for k in results if k.startswith("scans/nerf_feature/") and f"/{task}/" in k]
        assert keys, (task, sorted(results))
        assert all(np.isfinite(results[k]) for k in keys)
