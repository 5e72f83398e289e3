"""The tables of a correspondence report: rows (one per category x feature source) built from ns-eval results,
the headline summary, the paper's co-segmentation table and a long-format CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple, Union

from rich.table import Table

from featurenerf_ns.eval.metrics import PCK_THRESHOLDS_2D, PCK_THRESHOLDS_3D
from featurenerf_ns.eval.providers import PRIOR_LABELS

if TYPE_CHECKING:
    pass


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
