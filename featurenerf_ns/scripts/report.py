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

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple, Union, cast

import numpy as np
import tyro
from rich.table import Table

from featurenerf_ns.eval.metrics import PCK_THRESHOLDS_2D, PCK_THRESHOLDS_3D
from featurenerf_ns.eval.providers import PRIOR_LABELS
from featurenerf_ns.utils.cli import make_console
from featurenerf_ns.utils.palette import part_colors, part_colors_uint8

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig

    from featurenerf_ns.data.instances import CategoryData
    from featurenerf_ns.pipelines.featurenerf_pipeline import FeatureNeRFPipeline

CONSOLE = make_console(soft_wrap=True)

HEADLINE: List[Tuple[str, str, str]] = [
    # (column title, task, metric)
    ("2D kp PCK@5", "kp2d_cross", "pck@5"),
    ("2D kp PCK@10", "kp2d_cross", "pck@10"),
    ("2D part mIoU", "part2d_cross", "miou"),
    ("3D kp PCK@0.05", "kp3d_cross", "pck@0.05"),
    ("3D kp PCK@0.1", "kp3d_cross", "pck@0.1"),
    ("3D part mIoU", "part3d_cross", "miou"),
    ("novel-view 2D kp PCK@10", "kp2d_novel", "pck@10"),
    ("novel-view 2D part mIoU", "part2d_novel", "miou"),
    ("x-view 2D kp PCK@10", "kp2d_xview", "pck@10"),
    ("x-view 2D part mIoU", "part2d_xview", "miou"),
    ("x-view 3D kp PCK@0.1", "kp3d_xview", "pck@0.1"),
    ("x-view 3D part mIoU", "part3d_xview", "miou"),
]
PCK_TASKS = [
    ("kp2d_cross", "2D keypoints, cross-instance", PCK_THRESHOLDS_2D, "px at 128²"),
    ("kp2d_novel", "2D keypoints, novel view", PCK_THRESHOLDS_2D, "px at 128²"),
    ("kp3d_cross", "3D keypoints, cross-instance", PCK_THRESHOLDS_3D, "object units"),
    ("kp2d_xview", "2D keypoints, cross-view", PCK_THRESHOLDS_2D, "px at 128²"),
    ("kp3d_xview", "3D keypoints, cross-view", PCK_THRESHOLDS_3D, "object units"),
]


class ReportError(ValueError):
    """Bad report input; one line naming the file and the fix."""


@dataclass
class Row:
    category: str
    label: str
    source: str  # feature key in the results: nerf_feature | feature | teacher2d
    run: Optional[dict]  # the ns-eval JSON (None for nothing)
    metrics: Dict[str, float]  # <task>/<metric> -> value

    def get(self, task: str, metric: str) -> float:
        return float(self.metrics.get(f"{task}/{metric}", float("nan")))


def method_label(method_name: str) -> str:
    m = method_name or ""
    if "nodistill" in m:
        return "NeRF feature (no distill)"
    if "nocoord" in m:
        return "FeatureNeRF w/o L_coord"
    if "diffusion" in m:
        return "FeatureNeRF (Diffusion)"
    return "FeatureNeRF (DINOv2)"


def load_eval(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReportError(
            f"{path}: not found; write it with `ns-eval --load-config <run>/config.yml --output-path {path}`"
        )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: invalid JSON ({e.msg}); re-run ns-eval to rewrite it") from None
    if not isinstance(d, dict) or not isinstance(d.get("results"), dict):
        raise ReportError(
            f"{path}: not an ns-eval result (no 'results'); pass the file written by ns-eval --output-path"
        )
    d["_path"] = str(path)
    return d


def split_results(results: Dict[str, float]) -> Dict[Tuple[str, str], Dict[str, float]]:
    """``<category>/<source>/<task>/<metric>`` keys -> (category, source) -> {task/metric: value}."""
    out: Dict[Tuple[str, str], Dict[str, float]] = {}
    for k, v in results.items():
        parts = k.split("/")
        if len(parts) == 4 and isinstance(v, (int, float)):
            out.setdefault((parts[0], parts[1]), {})[f"{parts[2]}/{parts[3]}"] = float(v)
    return out


def build_rows(evals: List[dict]) -> List[Row]:
    rows: List[Row] = []
    teacher_done: Set[Union[str, Tuple[str, str]]] = set()
    per_run = [(d, split_results(d["results"])) for d in evals]
    for d, groups in per_run:  # teacher baseline first, once per category
        for (cat, src), m in groups.items():
            if src == "teacher2d" and cat not in teacher_done:
                rows.append(
                    Row(
                        cat,
                        "Teacher 2D (DINOv2 ViT-S/14)"
                        if "diffusion" not in d.get("method_name", "")
                        else "Teacher 2D (Diffusion)",
                        src,
                        d,
                        m,
                    )
                )
                teacher_done.add(cat)
    for d, groups in per_run:  # the position priors (ground truth geometry), once per category
        for (cat, src), m in groups.items():
            if src in PRIOR_LABELS and (cat, src) not in teacher_done:
                rows.append(Row(cat, PRIOR_LABELS[src], src, None, m))
                teacher_done.add((cat, src))
    for d, groups in per_run:
        label = method_label(d.get("method_name", ""))
        if d.get("experiment_name") and sum(method_label(e.get("method_name", "")) == label for e in evals) > 1:
            label = f"{label} [{d['experiment_name']}]"
        for (cat, src), m in sorted(groups.items(), key=lambda x: (x[0][0], x[0][1] != "nerf_feature")):
            if src == "nerf_feature":
                rows.append(Row(cat, label, src, d, m))
            elif src == "feature":
                rows.append(Row(cat, f"{label}, distilled head", src, d, m))
    if not rows:
        raise ReportError(
            f"{evals[0]['_path']}: no correspondence metrics in 'results'; evaluate with a featurenerf run on "
            "annotated data (pipeline.correspondence.enabled True)"
        )
    return rows


def _fmt(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _nvs(row: Row) -> Tuple[float, float]:
    if row.source == "teacher2d" or row.run is None:
        return float("nan"), float("nan")
    r = row.run["results"]
    return float(r.get("psnr", float("nan"))), float(r.get("ssim", float("nan")))


def summary_tables(rows: List[Row]) -> Tuple[str, str, List[Table]]:
    cols = [c for c, _, _ in HEADLINE] + ["PSNR", "SSIM"]
    md = io.StringIO()
    csv_buf = io.StringIO()
    w = csv.writer(csv_buf)
    w.writerow(["category", "method", "feature"] + cols)
    tables = []
    for cat in sorted({r.category for r in rows}):
        crow = [r for r in rows if r.category == cat]
        n = {
            t: int(max((r.get(t, "num_pairs") for r in crow if not math.isnan(r.get(t, "num_pairs"))), default=0))
            for t in ("part2d_cross", "part2d_novel", "part2d_xview")
        }
        md.write(
            f"### {cat}: {n['part2d_cross']} cross-instance, {n['part2d_novel']} novel-view and {n['part2d_xview']} "
            "cross-view pairs\n\n"
        )
        md.write("| method | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols) + "\n")
        t = Table(
            title=f"{cat}: correspondence ({n['part2d_cross']} cross-instance / {n['part2d_novel']} novel-view / "
            f"{n['part2d_xview']} cross-view pairs); "
            "PCK in % (2D: px at 128², 3D: object units), mIoU in %"
        )
        t.add_column("method")
        for c in cols:
            t.add_column(c, justify="right")
        for r in crow:
            vals = [r.get(task, metric) for _, task, metric in HEADLINE]
            psnr, ssim = _nvs(r)
            cells = [_fmt(v) for v in vals] + [_fmt(psnr), "—" if math.isnan(ssim) else f"{ssim:.3f}"]
            md.write(f"| {r.label} | " + " | ".join(cells) + " |\n")
            t.add_row(r.label, *cells)
            w.writerow([cat, r.label, r.source] + [("" if math.isnan(v) else f"{v:.4f}") for v in vals + [psnr, ssim]])
        md.write("\n")
        tables.append(t)
    return md.getvalue(), csv_buf.getvalue(), tables


def miou_table(rows: List[Row]) -> str:
    """The paper's co-segmentation table layout: rows = 2D/3D x method, columns = categories."""
    cats = sorted({r.category for r in rows})
    labels = list(dict.fromkeys(r.label for r in rows))
    out = ["| | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for dim, task in (
        ("2D", "part2d_cross"),
        ("3D", "part3d_cross"),
        ("2D cross-view", "part2d_xview"),
        ("3D cross-view", "part3d_xview"),
    ):
        if all(math.isnan(r.get(task, "miou")) for r in rows):
            continue
        for lab in labels:
            vals = []
            for c in cats:
                r = next((r for r in rows if r.category == c and r.label == lab), None)
                vals.append(_fmt(r.get(task, "miou")) if r else "—")
            out.append(f"| {dim} {lab} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


def long_csv(rows: List[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["category", "method", "feature", "task", "metric", "value", "eval_file"])
    for r in rows:
        for k in sorted(r.metrics):
            task, metric = k.split("/", 1)
            w.writerow(
                [r.category, r.label, r.source, task, metric, f"{r.metrics[k]:.6g}", r.run["_path"] if r.run else ""]
            )
    return buf.getvalue()


def pck_plot(rows: List[Row], category: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crow = [r for r in rows if r.category == category]
    fig, axes = plt.subplots(1, len(PCK_TASKS), figsize=(4.2 * len(PCK_TASKS), 3.6))
    for ax, (task, title, thr, unit) in zip(axes, PCK_TASKS):
        for r in crow:
            ys = [r.get(task, f"pck@{t:g}") for t in thr]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(
                thr,
                ys,
                marker="o",
                label=r.label,
                linestyle="--" if r.source == "teacher2d" else ":" if r.source in PRIOR_LABELS else "-",
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"threshold ({unit})")
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{category}: keypoint transfer PCK vs threshold", fontsize=11)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)


def _save_fig(fig, path: Path) -> None:
    from featurenerf_ns.data.layout import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


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
    """Loads each run and evaluates its first ``num`` cross-instance pairs keeping the predictions.
    Returns [(method label, [example dict per pair])] and the category data."""
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
        pipeline.correspondence_config.tasks = ("kp2d_cross", "part2d_cross", "part3d_cross")
        _, examples = pipeline.correspondence_metrics(num, teacher=(k == 0), keep=num, progress=False)
        cat = pipeline.datamanager.cat
        out.append((method_label(d.get("method_name", "")), examples))
        del pipeline
    return out, cat


def untrained_pipeline(cfg_path: Path, seed: int = 0):
    """The pipeline of a run's config with freshly initialised weights (torch seed ``seed``), in eval mode: the
    'untrained network' baseline."""
    import torch
    import yaml
    from nerfstudio.configs.method_configs import all_methods

    config = yaml.load(Path(cfg_path).read_text(), Loader=yaml.Loader)
    if config.method_name in all_methods:
        method = cast("TrainerConfig", all_methods[config.method_name])  # a featurenerf method, not a dummy
        config.pipeline.datamanager._target = method.pipeline.datamanager._target
    torch.manual_seed(seed)
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    pipeline.eval()
    return pipeline


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


def _overlay(rgb: np.ndarray, xy: np.ndarray, labels: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    img = rgb.copy()
    ij = np.floor(xy).astype(int)
    img[ij[:, 1], ij[:, 0]] = (alpha * part_colors_uint8(labels) + (1 - alpha) * img[ij[:, 1], ij[:, 0]]).astype(
        np.uint8
    )
    return img


def qualitative_figure(cat, per_run: List[Tuple[str, list]], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from featurenerf_ns.data.instances import load_rgba

    base = per_run[0][1][k]
    s, t, v, res = base["source"], base["target"], base["view"], base["resolution"]

    def rgb(inst):
        a = load_rgba(cat.instance(inst).image_paths[v])[..., :3]
        return np.asarray(Image.fromarray((a * 255).round().astype(np.uint8)).resize((res, res), Image.BILINEAR))

    src_img, tgt_img = rgb(s), rgb(t)
    rows: List[Tuple[str, Dict[str, Any]]] = []  # (label, example dict of one feature)
    for label, examples in per_run:
        ex = examples[k]
        for key, name in (
            ("teacher2d", "Teacher 2D"),
            ("nerf_feature", label),
            ("feature", f"{label}, distilled head"),
        ):
            if key in ex and (key != "teacher2d" or not any(r[0] == "Teacher 2D" for r in rows)):
                rows.append((name, ex[key]))
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.7 * len(rows)), squeeze=False)
    for i, (name, e) in enumerate(rows):
        ax = axes[i]
        ax[0].imshow(src_img)
        ax[1].imshow(tgt_img)
        if "kp_ids" in e:
            for j, kid in enumerate(e["kp_ids"]):
                c = cmap(int(kid) % 20)
                ax[0].scatter(*e["kp_source"][j], color=c, s=28, edgecolors="white", linewidths=0.6)
                ax[1].scatter(*e["kp_pred"][j], color=c, s=28, edgecolors="white", linewidths=0.6)
                ax[1].scatter(*e["kp_target"][j], color=c, s=34, marker="x")
                ax[1].plot(
                    [e["kp_pred"][j][0], e["kp_target"][j][0]],
                    [e["kp_pred"][j][1], e["kp_target"][j][1]],
                    color=c,
                    lw=0.7,
                )
        ax[2].imshow(_overlay(src_img, e["source_fg"], e["source_labels"]))
        ax[3].imshow(_overlay(tgt_img, e["target_fg"], e["target_pred_labels"]))
        if "points_target" in e:
            p, lab = e["points_target"], e["labels_target_pred"]
            ax[4].scatter(p[:, 0], p[:, 2], c=part_colors(lab), s=2)
            ax[4].set_aspect("equal")
        ax[0].set_ylabel(name, fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    for j, title in enumerate(
        [
            "source keypoints",
            "transferred (o) vs truth (x)",
            "source parts",
            "transferred parts (2D)",
            "transferred parts (3D, front)",
        ]
    ):
        axes[0, j].set_title(title, fontsize=9)
    fig.suptitle(f"{cat.category}: {s} -> {t}, view {v} (each conditioned on that view)", fontsize=10)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)


@dataclass
class ReportCommand:
    """Tables (Markdown + CSV), PCK plots and qualitative figures from ns-eval JSON files."""

    evals: Tuple[Path, ...]
    """ns-eval output files (one per run); the teacher-2D row comes from the first that has it."""
    out: Path = Path("outputs/report")
    qualitative: int = 3
    """Cross-instance pairs drawn as figures (0 = none; loads each run's checkpoint)."""
    untrained: bool = True
    """Also score the first run's network at initialisation (what position alone gives on aligned objects)."""

    def main(self) -> None:
        evals = [load_eval(p) for p in self.evals]
        rows = build_rows(evals)
        if self.untrained:
            rows += untrained_rows(evals)
        self.out.mkdir(parents=True, exist_ok=True)
        from featurenerf_ns.data.layout import atomic_write_bytes, atomic_write_json

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
                for k in range(min(len(e) for _, e in per_run)):
                    name = f"qualitative_{cat_data.category}_{k}.png"
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
    from featurenerf_ns.data.layout import FeatureNeRFDataError

    cmd = tyro.cli(ReportCommand, description=__doc__)
    try:
        cmd.main()
    except (ReportError, FeatureNeRFDataError) as e:
        CONSOLE.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
