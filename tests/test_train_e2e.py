"""ns-train / ns-eval / --load-dir through nerfstudio's own CLIs (subprocesses, no environment workarounds)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _env():
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    return env


def _train(data: Path, out: Path, stamp: str, iters: int, method: str = "featurenerf-tiny", extra=()):
    cmd = [
        str(BIN / "ns-train"),
        method,
        "--data",
        str(data / "chair"),
        "--max-num-iterations",
        str(iters),
        "--output-dir",
        str(out),
        "--experiment-name",
        "e2e",
        "--timestamp",
        stamp,
        "--vis",
        "tensorboard",
        "--steps-per-eval-batch",
        "2",
        "--steps-per-eval-image",
        "3",
        "--steps-per-save",
        "2",
        "--pipeline.datamanager.image-size",
        "32",
        "--pipeline.datamanager.dataparser.max-instances",
        "3",
        "--pipeline.datamanager.eval-num-instances",
        "1",
        "--pipeline.datamanager.eval-target-views",
        "5",
        "--pipeline.model.num-coarse-samples",
        "8",
        "--pipeline.model.num-importance-samples",
        "4",
        "--pipeline.model.num-depth-samples",
        "4",
        "--pipeline.correspondence.split",
        "train",
        "--pipeline.correspondence.num-pairs",
        "2",
        *extra,
    ]
    if method != "featurenerf-nodistill-tiny":
        cmd += ["--pipeline.datamanager.teacher.weights", "random", "--pipeline.datamanager.teacher.input-size", "56"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out / "e2e" / method / stamp, r.stdout + r.stderr


def _eval(run: Path, out: Path) -> dict:
    r = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(run / "config.yml"), "--output-path", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())["results"]


def _scalar_tags(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_eval_and_resume(chair_root, tmp_path):
    run, log = _train(
        chair_root,
        tmp_path,
        "a",
        4,
        extra=["--pipeline.correspondence.callback-every", "2", "--pipeline.correspondence.callback-pairs", "1"],
    )
    ckpts = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts and ckpts[-1].name == "step-000000003.ckpt"
    assert "random init" in log or "not available offline" in log  # the loud ResNet-34 warning
    # the learning-curve callback logged at steps 0 and 2: tensorboard, console, learning_curve.jsonl
    assert "step 2 eval (1 pairs/kind)" in log
    tags = _scalar_tags(run)
    assert tags["Correspondence/chair/nerf_feature/kp3d_cross/pck@0.1"] == [0, 2]
    assert tags["Correspondence/chair/feature/kp3d_xview/pck@0.1"] == [0, 2]
    assert "Correspondence/chair/nerf_feature/part2d_novel/miou" in tags and "Eval Curve/psnr" in tags
    from featurenerf_ns.data.layout import read_jsonl

    curve = read_jsonl(run / "learning_curve.jsonl")
    assert [r["step"] for r in curve] == [0, 2] and curve[1]["train_s"] > curve[0]["train_s"] >= 0
    assert 0 < curve[1]["metrics"]["psnr"] < 60 and "chair/nerf_feature/part3d_xview/miou" in curve[1]["metrics"]

    res = _eval(run, tmp_path / "eval.json")
    assert {"psnr", "ssim"} <= set(res) and 0 < res["psnr"] < 60
    # model features, the teacher-2D baseline and the position priors, on v1-style and cross-view pairs
    for src in ("nerf_feature", "feature", "teacher2d", "view_frame_prior", "alignment_oracle"):
        for key in (
            "kp2d_cross/pck@10",
            "part2d_cross/miou",
            "kp3d_cross/pck@0.1",
            "part3d_cross/miou",
            "kp2d_novel/pck@10",
            "part2d_novel/miou",
            "kp2d_xview/pck@10",
            "part2d_xview/miou",
            "kp3d_xview/pck@0.1",
            "part3d_xview/miou",
        ):
            assert 0 <= res[f"chair/{src}/{key}"] <= 100, (src, key)
        assert res[f"chair/{src}/part2d_cross/num_pairs"] == 2 and res[f"chair/{src}/part3d_xview/num_pairs"] == 2
    # evaluating twice gives identical numbers
    again = _eval(run, tmp_path / "eval2.json")
    assert {k: v for k, v in again.items() if "/" in k} == {k: v for k, v in res.items() if "/" in k}

    run2, log2 = _train(chair_root, tmp_path, "b", 3, extra=["--load-dir", str(run / "nerfstudio_models")])
    steps = sorted(
        int(re.search(r"step-(\d+)", p.name).group(1)) for p in (run2 / "nerfstudio_models").glob("step-*.ckpt")
    )
    assert steps[-1] == 3 + 3, steps  # continued from step 4 (the loaded step 3 + 1) for 3 more iterations


def test_nodistill_needs_no_teacher(chair_root, tmp_path):
    run, log = _train(chair_root, tmp_path, "nd", 2, method="featurenerf-nodistill-tiny")
    assert "caching" not in log and (run / "nerfstudio_models").is_dir()
