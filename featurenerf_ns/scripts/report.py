"""``featurenerf-report``: turn ns-eval results of one or more runs into the paper's tables, PCK plots and
qualitative figures.

    ns-eval --load-config outputs/.../featurenerf-tiny/<ts>/config.yml --output-path eval_fnerf.json
    ns-eval --load-config outputs/.../featurenerf-nodistill-tiny/<ts>/config.yml --output-path eval_nodistill.json
    featurenerf-report eval_fnerf.json eval_nodistill.json --out outputs/report

Writes ``summary.md`` / ``summary.csv`` (headline metrics per category and method), ``metrics.csv`` (every metric,
long format), ``miou.md`` (the paper's co-segmentation table: 2D/3D x method, one column per category),
``pck_<category>.png`` (PCK vs threshold per task) and ``qualitative_<category>_<k>.png`` (source with keypoints
and parts -> target transfers, one row per method; needs the runs' checkpoints) and prints the summary table.
Rows: the teacher-2D baseline (from the first run that has it), then every run's internal NeRF feature and, for
distilled runs, the distilled head.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, cast

import tyro

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes, atomic_write_json
from featurenerf_ns.eval.figures import pck_plot, qualitative_figure
from featurenerf_ns.eval.tables import (
    ReportError,
    Row,
    build_rows,
    load_eval,
    long_csv,
    method_label,
    miou_table,
    split_results,
    summary_tables,
)
from featurenerf_ns.pipelines.untrained import untrained_pipeline
from featurenerf_ns.utils.cli import make_console

if TYPE_CHECKING:
    from featurenerf_ns.data.instances import CategoryData
    from featurenerf_ns.pipelines.featurenerf_pipeline import FeatureNeRFPipeline

CONSOLE = make_console(soft_wrap=True)


# ----------------------------------------------------------------------------------------------------------------------
# Qualitative figures


def run_config_path(run: dict) -> Optional[Path]:
    ckpt = Path(run.get("checkpoint", ""))
    for base in (Path.cwd(), Path(run["_path"]).parent):
        cfg = (base / ckpt).parent.parent / "config.yml"
        if cfg.is_file():
            return cfg
    return None


def collect_examples(evals: List[dict], num: int) -> Tuple[List[Tuple[str, list]], Optional["CategoryData"]]:
    """Loads each run and evaluates its first ``num`` cross-instance and first ``num`` cross-view pairs keeping the
    predictions. Returns [(method label, [example dict per pair])] and the category data."""
    from nerfstudio.utils.eval_utils import eval_setup

    out = []
    cat = None
    for k, d in enumerate(evals):
        cfg = run_config_path(d)
        if cfg is None:
            CONSOLE.print(
                f"[yellow]{d['_path']}: checkpoint {d.get('checkpoint')} not found; "
                "no qualitative figures for it[/yellow]"
            )
            continue
        _, pipeline, _, _ = eval_setup(cfg, test_mode="test")
        pipeline = cast("FeatureNeRFPipeline", pipeline)  # a featurenerf run
        pipeline.correspondence_config.tasks = (
            "kp2d_cross",
            "part2d_cross",
            "part3d_cross",
            "kp2d_xview",
            "part2d_xview",
            "part3d_xview",
        )
        _, examples = pipeline.correspondence_metrics(num, teacher=(k == 0), keep=num, progress=False)
        cat = pipeline.datamanager.cat
        out.append((method_label(d.get("method_name", "")), examples))
        del pipeline
    return out, cat


def untrained_rows(evals: List[dict]) -> List[Row]:
    """The first run's architecture at its initialisation (seeded like training step 0), evaluated on the same
    pairs: how much of a score the positional encoding of the conditioning camera frame gives before any
    training (objects are aligned and cross-instance pairs share the camera, so position alone is informative)."""
    d = evals[0]
    cfg_path = run_config_path(d)
    if cfg_path is None:
        CONSOLE.print(f"[yellow]{d['_path']}: checkpoint not found; no untrained-network row[/yellow]")
        return []
    pipeline = untrained_pipeline(cfg_path)
    groups = split_results(d["results"])
    rows = []
    for (cat, src), m in groups.items():
        if src != "nerf_feature":
            continue
        n = int(m.get("part2d_cross/num_pairs", 0)) or int(m.get("part2d_novel/num_pairs", 0)) or None
        metrics, _ = pipeline.correspondence_metrics(n, features=("nerf_feature",), teacher=False)
        mm = {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith(f"{cat}/nerf_feature/")}
        rows.append(Row(cat, "Untrained network (init, internal feature)", "untrained", None, mm))
    return rows


@dataclass
class ReportCommand:
    """Tables (Markdown + CSV), PCK plots and qualitative figures from ns-eval JSON files."""

    evals: tyro.conf.Positional[Tuple[Path, ...]]
    """ns-eval output files (one per run); the teacher-2D row comes from the first that has it."""
    out: Path = Path("outputs/report")
    qualitative: int = 3
    """Cross-instance pairs (same view, ``qualitative_<category>_<k>.png``) and as many cross-view pairs
    (``qualitative_xview_<category>_<k>.png``) drawn as figures (0 = none; loads each run's checkpoint)."""
    untrained: bool = True
    """Also score the first run's network at initialisation (what position alone gives on aligned objects)."""

    def main(self) -> None:
        evals = [load_eval(p) for p in self.evals]
        rows = build_rows(evals)
        if self.untrained:
            rows += untrained_rows(evals)
        self.out.mkdir(parents=True, exist_ok=True)

        md, csv_text, tables = summary_tables(rows)
        for t in tables:
            CONSOLE.print(t)
        miou = miou_table(rows)
        atomic_write_bytes(
            self.out / "summary.md",
            ("# Correspondence results\n\n" + md + "## Part co-segmentation mIoU (cross-instance)\n\n" + miou).encode(),
        )
        atomic_write_bytes(self.out / "summary.csv", csv_text.encode())
        atomic_write_bytes(self.out / "miou.md", miou.encode())
        atomic_write_bytes(self.out / "metrics.csv", long_csv(rows).encode())
        written = ["summary.md", "summary.csv", "miou.md", "metrics.csv"]
        for cat in sorted({r.category for r in rows}):
            pck_plot(rows, cat, self.out / f"pck_{cat}.png")
            written.append(f"pck_{cat}.png")
        if self.qualitative > 0:
            per_run, cat_data = collect_examples(evals, self.qualitative)
            if per_run:
                assert cat_data is not None  # set by every run that produced examples
                counts: Dict[str, int] = {}
                for k in range(min(len(e) for _, e in per_run)):
                    kind = per_run[0][1][k].get("kind", "cross")
                    n = counts[kind] = counts.get(kind, -1) + 1
                    prefix = "qualitative" if kind == "cross" else f"qualitative_{kind}"
                    name = f"{prefix}_{cat_data.category}_{n}.png"
                    qualitative_figure(cat_data, per_run, k, self.out / name)
                    written.append(name)
        atomic_write_json(
            self.out / "report.json",
            {
                "evals": [d["_path"] for d in evals],
                "files": written,
                "rows": [
                    {"category": r.category, "method": r.label, "feature": r.source, "metrics": r.metrics} for r in rows
                ],
            },
        )
        CONSOLE.print(f"wrote {self.out}/: " + ", ".join(written))


def entrypoint() -> None:

    cmd = tyro.cli(ReportCommand, description=__doc__)
    try:
        cmd.main()
    except (ReportError, FeatureNeRFDataError) as e:
        CONSOLE.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
