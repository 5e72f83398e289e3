"""nerfstudio's own CLIs (ns-train, ns-eval, ...) end with one line for this plugin's input errors, not a traceback."""

from __future__ import annotations

import subprocess
import sys

from _runs import BIN, _env

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.teachers.base import TeacherError
from featurenerf_ns.utils import error_hook


def test_only_the_plugins_errors_count_as_input_errors_and_only_ns_programs_get_the_hook(monkeypatch):
    assert error_hook.is_input_error(FeatureNeRFDataError("x")) and error_hook.is_input_error(TeacherError("x"))
    assert not error_hook.is_input_error(ValueError("x")) and not error_hook.is_input_error(KeyError("x"))
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    assert not error_hook.install_for_nerfstudio_cli("/usr/bin/python") and sys.excepthook is sys.__excepthook__
    assert error_hook.install_for_nerfstudio_cli("/venv/bin/ns-train")
    hook = sys.excepthook
    assert error_hook.install_for_nerfstudio_cli("/venv/bin/ns-eval") and sys.excepthook is hook  # installed once


def test_ns_train_with_a_missing_data_folder_ends_in_one_line(tmp_path):
    r = subprocess.run(
        [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(tmp_path / "nowhere" / "chair"),
         "--output-dir", str(tmp_path / "out"), "--vis", "tensorboard"],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "nowhere/chair: data directory not found" in last
    assert "featurenerf-data" in last
    # the full traceback on request
    r = subprocess.run(
        [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(tmp_path / "nowhere" / "chair"),
         "--output-dir", str(tmp_path / "out"), "--vis", "tensorboard"],
        capture_output=True, text=True, timeout=300, env={**_env(), "FEATURENERF_TRACEBACK": "1"}, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" in r.stderr and "FeatureNeRFDataError" in r.stderr
