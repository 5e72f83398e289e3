"""ns-train / ns-eval / --load-dir through nerfstudio's own CLIs (subprocesses, no environment workarounds)."""

from __future__ import annotations

import re
from pathlib import Path

from _runs import eval_run, train_run


def _scalar_tags(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_eval_and_resume(chair_root, tiny_run, tmp_path):
    run, log = tiny_run
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
    assert 0 < curve[1]["metrics"]["psnr"] < 60
    assert {f"chair/{f}/part3d_xview/miou" for f in ("nerf_feature", "nerf_feature_relu")} <= set(curve[1]["metrics"])

    res = eval_run(run, tmp_path / "eval.json")
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
    again = eval_run(run, tmp_path / "eval2.json")
    assert {k: v for k, v in again.items() if "/" in k} == {k: v for k, v in res.items() if "/" in k}

    run2, log2 = train_run(chair_root, tmp_path, "b", 3, extra=["--load-dir", str(run / "nerfstudio_models")])
    steps = sorted(
        int(re.search(r"step-(\d+)", p.name).group(1)) for p in (run2 / "nerfstudio_models").glob("step-*.ckpt")
    )
    assert steps[-1] == 3 + 3, steps  # continued from step 4 (the loaded step 3 + 1) for 3 more iterations


def test_nodistill_needs_no_teacher(chair_root, tmp_path):
    run, log = train_run(chair_root, tmp_path, "nd", 2, method="featurenerf-nodistill-tiny")
    assert "caching" not in log and (run / "nerfstudio_models").is_dir()
