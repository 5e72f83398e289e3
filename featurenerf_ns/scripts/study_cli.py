"""``featurenerf-study`` subcommands (run / status / report / precision); see :mod:`featurenerf_ns.scripts.study`."""

from __future__ import annotations

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.scripts import study
from featurenerf_ns.scripts.study import Run, Status, StudyError
from featurenerf_ns.scripts.study_precision import Precision
from featurenerf_ns.scripts.study_report import Report
from featurenerf_ns.utils.cli import run_subcommands


def entrypoint() -> None:
    run_subcommands(
        {"run": Run, "report": Report, "status": Status, "precision": Precision},
        study.__doc__,
        (StudyError, FeatureNeRFDataError),
    )


if __name__ == "__main__":
    entrypoint()
