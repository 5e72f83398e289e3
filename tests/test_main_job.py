"""The README's main job end to end (small version always; the full default run is marked slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run_main(tmp_path, *args):
    cmd = [sys.executable, "-m", "featurenerf_ns.scripts.main_job", "--data", str(tmp_path / "data"),
           "--out", str(tmp_path / "out"), *args]
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


def test_main_job_small(tmp_path):
    r = _run_main(tmp_path, "--categories", "chair", "bottle", "--num-instances", "3", "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    _check_report(tmp_path, ("chair", "bottle"), 3)
    # Re-running resumes on complete data: nothing is regenerated.
    r2 = _run_main(tmp_path, "--categories", "chair", "bottle", "--num-instances", "3", "--workers", "1")
    assert r2.returncode == 0 and "rendered 0 views" in r2.stdout


@pytest.mark.slow
def test_main_job_default(tmp_path):
    r = _run_main(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    _check_report(tmp_path, ("chair", "car", "airplane", "table", "bottle", "motorbike"), 60)
