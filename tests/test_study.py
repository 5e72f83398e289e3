"""featurenerf-study end to end on the small fixture: train (resuming a killed run), evaluate (models, teacher,
priors, untrained network), report (tables, figures, learning curves); settings that differ are refused."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
from _runs import RANDOM_TEACHER_ARGS, SMALL_DATA_ARGS, SMALL_MODEL_ARGS

from featurenerf_ns.scripts.study import Run, Status, StudyError, latest_checkpoint, train_command
from featurenerf_ns.scripts.study_report import Report

TRAIN_ARGS = " ".join((*SMALL_MODEL_ARGS, *RANDOM_TEACHER_ARGS, "--steps-per-save", "1", *SMALL_DATA_ARGS))


def _study(root, out, **kw):
    base = dict(
        out=out,
        data=root,
        categories=("chair",),
        methods=("featurenerf-tiny", "featurenerf-nodistill-tiny"),
        seeds=(0,),
        steps=3,
        image_size=32,
        curve_every=2,
        curve_pairs=1,
        eval_pairs=2,
        train_args=TRAIN_ARGS,
    )
    base.update(kw)
    return base


def test_study_run_resume_and_report(chair_root, tmp_path, capsys):
    out = tmp_path / "study"
    st = Run(**_study(chair_root, out))
    # a run killed after 2 of its 3 steps: its checkpoint is there, no train_done.json
    r = subprocess.run(
        train_command(st, "chair", "featurenerf-nodistill-tiny", 0, 2, None),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert latest_checkpoint(st.run_dir("chair", "featurenerf-nodistill-tiny", 0))[0] == 1
    st.main()
    for method in st.methods:
        run = st.run_dir("chair", method, 0)
        done = json.loads((run / "train_done.json").read_text())
        assert done["steps"] == 3 and latest_checkpoint(run)[0] == 2  # the killed one continued to step 3
        ev = json.loads(st.eval_path("chair", method, 0).read_text())
        assert 0 < ev["results"]["psnr"] < 60 and ev["results"]["chair/nerf_feature/part3d_xview/num_pairs"] == 2
        assert "chair/nerf_feature_centred/part3d_xview/miou" in ev["results"]
        assert [r["step"] for r in map(json.loads, (run / "learning_curve.jsonl").read_text().splitlines())][-1] == 2
    base = json.loads(st.baseline_path("chair").read_text())["results"]
    for src in ("teacher2d", "untrained", "view_frame_prior", "alignment_oracle"):
        assert 0 <= base[f"chair/{src}/kp3d_xview/pck@0.1"] <= 100, src
    assert base["black_psnr"] > 0

    md = tmp_path / "docs" / "results.md"
    Report(**_study(chair_root, out), md=md).main()
    text = md.read_text()
    for s in (
        "## Tab. 1",
        "## Tab. 2",
        "## Tab. 3",
        "## Tab. 4",
        "## Acceptance checks",
        "3D cross-view",
        "View-frame position prior",
        "Alignment oracle",
        "Untrained network",
        "NeRF feature (no distill)",
    ):
        assert s in text, s
    for f in ("pck_chair.png", "curves_chair.png"):
        assert (md.parent / "results" / f).stat().st_size > 5000, f

    # a second call trains and evaluates nothing (all done) ...
    mtime = st.eval_path("chair", "featurenerf-tiny", 0).stat().st_mtime
    Run(**_study(chair_root, out)).main()
    assert st.eval_path("chair", "featurenerf-tiny", 0).stat().st_mtime == mtime
    # ... and a different budget on the same folder is refused with the fix
    with pytest.raises(StudyError, match="steps=3, not 5.*another --out"):
        Run(**_study(chair_root, out, steps=5)).main()

    # status shows the study's own plan whatever the defaults are, and refuses a folder that is not a study
    status = Status(out=out)
    status.main()
    assert status.plan() == st.plan() and status.steps == st.steps == 3
    capsys.readouterr()
    status.main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(st.plan()) and all("done" in x and "evaluated" in x for x in lines), lines
    with pytest.raises(StudyError, match="not a study folder"):
        Status(out=tmp_path / "typo").main()


def test_study_json_keeps_every_category_method_and_seed_run_into_the_folder(tmp_path):
    """A command that adds a seed or a category to a study extends what status and report show (it used to replace
    the stored lists, so `--seeds 2` hid seeds 0 and 1 from the report)."""
    out = tmp_path / "study"
    Run(**_study(tmp_path, out, categories=("airplane",), seeds=(0, 1))).check_spec()
    Run(**_study(tmp_path, out, categories=("airplane",), seeds=(2,))).check_spec()
    Run(**_study(tmp_path, out, categories=("chair",), methods=("featurenerf-tiny",), seeds=(0,))).check_spec()
    stored = json.loads((out / "study.json").read_text())
    assert stored["categories"] == ["airplane", "chair"] and stored["seeds"] == [0, 1, 2]
    assert stored["methods"] == ["featurenerf-tiny", "featurenerf-nodistill-tiny"]
    status = Status(out=out)
    status.adopt_stored_settings()
    assert ("chair", "featurenerf-nodistill-tiny", 2) in status.plan() and len(status.plan()) == 12


def test_drop_stale_curve_keeps_points_before_resume_step(tmp_path):
    from featurenerf_ns.data.layout import append_jsonl, read_jsonl
    from featurenerf_ns.scripts.study import drop_stale_curve

    path = tmp_path / "learning_curve.jsonl"
    assert drop_stale_curve(path, 0) == 0  # no file: nothing to do
    for step in (0, 500, 1000):
        append_jsonl(path, {"step": step, "train_s": step / 10, "metrics": {}})
    assert drop_stale_curve(path, 501) == 1  # the checkpoint at 500 survives; the point at 1000 came after it
    assert [p["step"] for p in read_jsonl(path)] == [0, 500]
    assert drop_stale_curve(path, 0) == 2  # checkpoints lost: the run restarts from 0 and so does its curve
    assert read_jsonl(path) == []


def test_precision_report_compares_bf16_with_fp32_seed_noise(tmp_path):
    """The bf16-vs-fp32 report on synthetic finished runs: verdict per metric against the fp32 seed spread, the
    loss read back from tensorboard events, the speed-up from the training seconds; with --bf16-seeds 0 1 a second
    comparison (bf16 seed 1 vs fp32 seed 1) and the two-seed means."""
    from torch.utils.tensorboard import SummaryWriter

    from featurenerf_ns.data.layout import append_jsonl, atomic_write_json
    from featurenerf_ns.scripts.study_precision import RUNS, Precision, verdict

    pr = Precision(out=tmp_path / "prec", data=tmp_path, steps=100)
    assert "--pipeline.model.precision bfloat16" in pr._study("bfloat16").train_args
    assert pr._study("float32").seeds == (0, 1) and pr._study("bfloat16").seeds == (0,)
    values = {
        ("float32", 0): (25.0, 40.0, 10.0, 1.0),
        ("float32", 1): (25.4, 44.0, 11.0, 1.2),
        ("bfloat16", 0): (25.1, 49.0, 10.5, 1.1),
        ("bfloat16", 1): (25.3, 45.0, 13.0, 1.2),
    }  # psnr, part3d xview, kp3d xview, loss level
    for (precision, seed), (psnr, part, kp, loss) in values.items():
        st = pr._study(precision)
        atomic_write_json(
            st.eval_path("chair", "featurenerf-tiny", seed),
            {
                "step": 100,
                "results": {
                    "psnr": psnr,
                    "chair/nerf_feature/part3d_xview/miou": part,
                    "chair/nerf_feature/kp3d_xview/pck@0.1": kp,
                },
            },
        )
        run = st.run_dir("chair", "featurenerf-tiny", seed)
        # the training clock comes from the last learning-curve point (step 80 here, not the final step 100)
        for step, t in ((0, 0.0), (80, 32.0 if precision == "float32" else 16.0)):
            append_jsonl(
                run / "learning_curve.jsonl", {"step": step, "train_s": t, "train_cpu_s": 2 * t, "metrics": {}}
            )
        w = SummaryWriter(str(run))
        for step in range(0, 100, 10):
            w.add_scalar("Train Loss", loss * (1 + 9 * (step < 50)), step)
        w.close()
    s = pr.report()
    rows = {r["key"]: r for r in s["rows"]}
    assert rows["psnr"]["within_noise"] and abs(rows["psnr"]["noise"] - 0.4) < 1e-9
    assert not rows["nerf_feature/part3d_xview/miou"]["within_noise"]  # +9 against a spread of 4
    assert rows["nerf_feature/kp3d_xview/pck@0.1"]["within_noise"]
    assert abs(rows["loss_tail"]["bf16_s0"] - 1.1) < 1e-6 and rows["loss_tail"]["within_noise"]
    assert s["seconds_per_step"]["bfloat16/seed0"] == 0.2 and s["cpu_seconds_per_step"]["float32/seed0"] == 0.8
    assert not s["all_within_noise"]
    assert (pr.out / "loss_curves.png").stat().st_size > 5000 and "**no**" in (pr.out / "precision.md").read_text()
    assert verdict(1.0, (1.0, 1.0), 0.5) == (0.0, 0.0, True)
    assert [p for p, _ in RUNS].count("float32") == 2
    assert s["all_within_noise_s1"] is None and "bf16 s1" not in (pr.out / "precision.md").read_text()

    pr2 = Precision(out=tmp_path / "prec", data=tmp_path, steps=100, bf16_seeds=(0, 1))
    assert pr2._study("bfloat16").seeds == (0, 1)
    s2 = pr2.report()
    rows2 = {r["key"]: r for r in s2["rows"]}
    part = rows2["nerf_feature/part3d_xview/miou"]
    assert part["within_noise_s1"] and part["bf16_s1_minus_fp32_s1"] == 1.0  # 45 vs fp32 seed 1's 44, spread 4
    assert part["fp32_mean"] == 42.0 and part["bf16_mean"] == 47.0
    assert not rows2["nerf_feature/kp3d_xview/pck@0.1"]["within_noise_s1"]  # +2 against a spread of 1
    assert s2["all_within_noise_s1"] is False and "bf16 s1 - fp32 s1" in (pr2.out / "precision.md").read_text()
    with pytest.raises(StudyError, match="bf16-seeds"):
        Precision(out=tmp_path / "prec", data=tmp_path, bf16_seeds=(1,)).runs()


def test_curve_slope_per_doubling_and_extrapolated_steps():
    from featurenerf_ns.eval.study_results import curve_slope, steps_to_reach

    # PSNR = 20 + 0.5 log2(step): 0.5 dB per doubling; the step-0 point and the first quarter are left out
    curve = [{"step": 0, "metrics": {"psnr": 12.0}}, {"step": 100, "metrics": {"psnr": 0.0}}]
    curve += [{"step": s, "metrics": {"psnr": 20 + 0.5 * math.log2(s)}} for s in (1000, 2000, 3000, 4000)]
    slope, n = curve_slope(curve)
    assert n == 4 and slope == pytest.approx(0.5)
    assert steps_to_reach(25.0, 26.0, 0.5, 4000) == pytest.approx(16000)  # 1 dB = two doublings
    assert steps_to_reach(26.5, 26.0, 0.5, 4000) == 4000 and steps_to_reach(25.0, 26.0, -0.1, 4000) == float("inf")
    assert math.isnan(curve_slope(curve[:3])[0])  # fewer than three points


def test_ns_train_is_found_next_to_the_interpreter_else_on_path(tmp_path, monkeypatch):
    """A ``pip install --target`` folder (the GPU machines) puts ns-train on PATH, not next to the interpreter."""
    from featurenerf_ns.scripts.study import _bin

    env, target = tmp_path / "env" / "bin", tmp_path / "site" / "bin"
    for d in (env, target):
        d.mkdir(parents=True)
        (d / "ns-train").write_text("#!/bin/sh\n")
        (d / "ns-train").chmod(0o755)
    monkeypatch.setattr("sys.executable", str(env / "python"))
    monkeypatch.setenv("PATH", str(target))
    assert _bin("ns-train") == str(env / "ns-train")
    (env / "ns-train").unlink()
    assert _bin("ns-train") == str(target / "ns-train")
