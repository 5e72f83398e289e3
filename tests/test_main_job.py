"""The README's main job end to end (small version always; the full default run is marked slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run_main(tmp_path, *args):
    cmd = [
        sys.executable,
        "-m",
        "featurenerf_ns.scripts.main_job",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "out"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def _check_report(tmp_path, categories, n):
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [d["category"] for d in report["datasets"]] == list(categories)
    for d in report["datasets"]:
        assert sum(d["instances"].values()) == n
        assert d["parts_rendered"] == sorted(d["parts_rendered"]) and d["parts_rendered"]
        assert 0 < d["visible_keypoint_fraction"] <= 1 and 0 < d["foreground_fraction"] < 1
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 10_000
    assert "| chair |" in (tmp_path / "out" / "report.md").read_text() or "chair" not in categories


SMALL = (
    "--categories",
    "chair",
    "--num-instances",
    "10",
    "--workers",
    "1",
    "--teacher-weights",
    "random",
    "--train-minutes",
    "0.05",
    "--image-size",
    "32",
    "--pck-pairs",
    "10",
    "--eval-pairs",
    "2",
    "--qualitative",
    "1",
    "--orbit-frames",
    "3",
)


def test_main_job_small(tmp_path):
    """All stages on 10 chairs with a random-weight teacher (the DINOv2 conversion is tested in test_dinov2)."""
    r = _run_main(tmp_path, *SMALL)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    _check_report(tmp_path, ("chair",), 10)
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    t = report["teacher"]
    assert (
        t["instances"] == 7 and t["pck"]["trained"]["num_pairs"] == 10 and (out / "chair_dinov2-vits14.png").is_file()
    )
    tr = report["training"]
    assert [x["method"] for x in tr] == ["featurenerf-tiny", "featurenerf-nodistill-tiny"]
    for x in tr:
        assert x["steps"] >= 1 and 0 < x["eval"]["psnr"] < 60 and x["black_psnr"] > 0
    md = (out / "report.md").read_text()
    assert "## Training: featurenerf-tiny (CPU preset)" in md and "## Correspondence" in md
    for row in ("Teacher 2D", "FeatureNeRF (DINOv2)", "NeRF feature (no distill)"):
        assert f"| {row}" in md
    assert "![qualitative_xview_chair_0](report/qualitative_xview_chair_0.png)" in md
    for x in tr:  # an orbit GIF of each model, linked from the report
        assert x["render"]["frames"] == 3 and (out / x["render"]["gif"]).stat().st_size > 1000
        assert f"![{x['method']}]({x['render']['gif']})" in md
    folder = out / "report"
    for f in (
        "summary.md",
        "summary.csv",
        "miou.md",
        "metrics.csv",
        "pck_chair.png",
        "qualitative_chair_0.png",
        "qualitative_xview_chair_0.png",
    ):
        assert (folder / f).stat().st_size > 100, f
    # Re-running resumes on complete data: nothing is regenerated, the teacher cache is reused.
    r2 = _run_main(tmp_path, *SMALL, "--skip-training")
    assert r2.returncode == 0 and "rendered 0 views" in r2.stdout and "0 instances extracted, 7 reused" in r2.stdout


def test_main_job_n3f_stage_small(tmp_path):
    """--stages n3f on a 32 px scene of 12 views (random-weight teacher, 6 steps): the report's N3F section."""
    n3f_args = (
        "--max-num-iterations 6 --steps-per-eval-batch 100 --steps-per-eval-image 100 --steps-per-save 100 "
        "--pipeline.datamanager.teacher.input-size 56 --pipeline.datamanager.train-num-rays-per-batch 256 "
        "--pipeline.model.feature-start-step 2 --pipeline.scene-tasks.query-frames 2 "
        "--pipeline.scene-tasks.train-galleries 2 --pipeline.scene-tasks.heldout-galleries 2 "
        "--pipeline.scene-tasks.edit-frames 1 --pipeline.scene-tasks.min-pixels 4"
    )
    r = _run_main(
        tmp_path, "--stages", "n3f", "--scene", str(tmp_path / "scene"), "--teacher-weights", "random",
        "--scene-settings.resolution", "32", "--scene-settings.num-views", "12", "--scene-settings.supersample", "1",
        "--scene-settings.num-points", "128", f"--n3f-train-args={n3f_args}",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert "datasets" not in report and report["n3f"]["steps"] == 6  # only the N3F stage ran
    assert 0 <= report["n3f"]["metrics"]["scene/retrieval/n3f_heldout_map"] <= 100
    md = (out / "report.md").read_text()
    assert "## N3F on the embedded scene" in md and "| retrieval mAP, held-out galleries" in md
    assert (out / "n3f" / "figure.png").stat().st_size > 1000


@pytest.mark.slow
def test_main_job_default(tmp_path):
    r = _run_main(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    _check_report(tmp_path, ("chair", "car", "airplane", "table", "bottle", "motorbike"), 60)


def test_report_cli_takes_eval_files_as_positional_arguments():
    """`featurenerf-report a.json b.json --out dir` as the README, the module docstring and the main job print it."""
    import tyro

    from featurenerf_ns.scripts.report import ReportCommand

    cmd = tyro.cli(ReportCommand, args=["a.json", "b.json", "--out", "rep", "--qualitative", "1", "--no-untrained"])
    assert cmd.evals == (Path("a.json"), Path("b.json")) and cmd.out == Path("rep")
    assert cmd.qualitative == 1 and not cmd.untrained
