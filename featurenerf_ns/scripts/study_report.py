"""``featurenerf-study report``: the study's results as the paper's layouts (Markdown + PNG), from the study
folder alone, so ``docs/results.md`` regenerates with one command.

Tables (means over seeds, ± the spread over seeds when there are several):

* Tab. 1: part co-segmentation mIoU, 2D and 3D, same-view (protocol v1's pairs) and cross-view (v2);
* Fig. 3: keypoint PCK vs threshold, 2D and 3D, same-view and cross-view (``pck_<category>.png``);
* Tab. 2: novel-view co-segmentation (one instance, another view) and novel-view keypoints;
* Tab. 3: ablation (full / without L_coord / without distillation);
* Tab. 4: novel-view synthesis PSNR/SSIM with the all-black floor and the untrained network;
* learning curves (``curves_<category>.png``): PSNR and cross-view 3D part mIoU / keypoint PCK vs training step,
  from each run's ``learning_curve.jsonl`` (the training callback);
* the issue's acceptance checks, each printed as met / NOT met with the measured margin;
* ``<out>/notes.md``, when present, appended as written (the study's reading, kept next to its data).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from featurenerf_ns.data.layout import atomic_write_bytes, read_jsonl
from featurenerf_ns.eval.study_figures import curves_figure, pck_figure
from featurenerf_ns.eval.study_results import (
    BASELINE_LABELS,
    FEATURE_KEYS,
    METHOD_LABELS,
    ORDER,
    Entry,
    acceptance,
    curve_slope,
    family,
    steps_to_reach,
    table,
)
from featurenerf_ns.scripts.study import CONSOLE, StudyError, _Study


def collect(st: _Study) -> Tuple[List[Entry], Dict[str, dict], Dict[str, List[dict]]]:
    """Entries from the study's evaluation files; baselines per category; run records per category."""
    entries: Dict[Tuple[str, str], Entry] = {}
    baselines: Dict[str, dict] = {}
    runs: Dict[str, List[dict]] = {}
    for cat in st.categories:
        bp = st.baseline_path(cat)
        if bp.is_file():
            b = json.loads(bp.read_text())
            baselines[cat] = b
            for k, v in b["results"].items():
                parts = k.split("/")
                if len(parts) == 4 and parts[1] in BASELINE_LABELS:
                    e = entries.setdefault((cat, parts[1]), Entry(cat, parts[1], BASELINE_LABELS[parts[1]], {}))
                    e.values.setdefault(f"{parts[2]}/{parts[3]}", []).append(v)
        for method in st.methods:
            fam = family(method)
            for seed in st.seeds:
                ep = st.eval_path(cat, method, seed)
                if not ep.is_file():
                    continue
                d = json.loads(ep.read_text())
                runs.setdefault(cat, []).append(d)
                for k, v in d["results"].items():
                    parts = k.split("/")
                    if len(parts) == 4 and parts[1] in FEATURE_KEYS:
                        key = fam + FEATURE_KEYS[parts[1]]
                        label = METHOD_LABELS.get(key, f"{method} ({parts[1]})")
                        e = entries.setdefault((cat, key), Entry(cat, key, label, {}))
                        e.values.setdefault(f"{parts[2]}/{parts[3]}", []).append(v)
                for k in ("psnr", "ssim"):
                    if k in d["results"]:
                        e = entries.setdefault((cat, fam), Entry(cat, fam, METHOD_LABELS.get(fam, method), {}))
                        e.values.setdefault(k, []).append(d["results"][k])
                e = entries.setdefault((cat, fam), Entry(cat, fam, METHOD_LABELS.get(fam, method), {}))
                e.values.setdefault("steps", []).append(d.get("step"))
                e.values.setdefault("train_min", []).append((d.get("train_s") or float("nan")) / 60)
                e.values.setdefault("train_cpu_min", []).append((d.get("train_cpu_s") or float("nan")) / 60)
    if not entries:
        raise StudyError(f"{st.out / 'eval'}: no evaluations yet; run `featurenerf-study run --out {st.out}` first")
    return list(entries.values()), baselines, runs


PART_ROWS = (
    ("2D same-view", "part2d_cross/miou"),
    ("2D cross-view", "part2d_xview/miou"),
    ("3D same-view", "part3d_cross/miou"),
    ("3D cross-view", "part3d_xview/miou"),
)
"""The part co-segmentation rows of Tab. 1 and of the ablation (Tab. 3)."""


@dataclass
class Report(_Study):
    """Write the study's tables and figures (Markdown + PNG) from its folder."""

    md: Optional[Path] = None
    """Markdown file (default <out>/results.md); figures go to <md's folder>/<figures>/."""
    figures: str = "results"
    """Sub-folder of the Markdown file's folder for the figures."""

    def _psnr_slopes(self, cats, baselines: Dict[str, dict]) -> str:
        """Markdown: per category and method, the PSNR learning curve's gain per doubling of the steps (callback
        points of the last 75% of the run, mean over seeds) and the steps at which the final evaluation's PSNR would
        reach all-black + 5 dB at that rate (log-linear extrapolation: an estimate, not a measurement)."""
        lines = [
            "\n### Is the PSNR curve still rising?\n\n",
            "| category | method | seeds | dB per doubling of steps (callback, last 75%) | final PSNR | all-black + 5 "
            "| steps to reach it at that rate |\n|---|---|---:|---:|---:|---:|---:|\n",
        ]
        any_row = False
        for cat in cats:
            target = baselines.get(cat, {}).get("results", {}).get("black_psnr", float("nan")) + 5.0
            for method in self.methods:
                slopes, finals, steps = [], [], []
                for seed in self.seeds:
                    cp, ep = self.run_dir(cat, method, seed) / "learning_curve.jsonl", self.eval_path(cat, method, seed)
                    if not (cp.is_file() and ep.is_file()):
                        continue
                    slope, _ = curve_slope(read_jsonl(cp))
                    d = json.loads(ep.read_text())
                    slopes.append(slope)
                    finals.append(d["results"].get("psnr", float("nan")))
                    steps.append(int(d.get("step") or 0))
                if not slopes:
                    continue
                any_row = True
                sl, fin, st = float(np.nanmean(slopes)), float(np.nanmean(finals)), int(np.mean(steps))
                need = steps_to_reach(fin, target, sl, st)
                lines.append(
                    f"| {cat} | {method} | {len(slopes)} | {sl:.2f} | {fin:.2f} | {target:.2f} | "
                    + ("—" if math.isnan(need) else ("never (flat)" if math.isinf(need) else f"~{need:,.0f}"))
                    + " |\n"
                )
        return "".join(lines) + "\n" if any_row else ""

    def main(self) -> None:
        self.adopt_stored_settings()
        entries, baselines, runs = collect(self)
        md_path = self.md or (self.out / "results.md")
        fig_dir = md_path.parent / self.figures
        cats = [c for c in self.categories if any(e.category == c for e in entries)]
        buf = io.StringIO()
        w = buf.write
        w("# FeatureNeRF study results\n\n")
        w(
            f"Generated by `featurenerf-study report --out {self.out}"
            + (f" --md {md_path}" if self.md else "")
            + "` from "
            f"the study folder `{self.out}`. Every number below is read from the evaluation files there.\n\n"
        )
        w("## Setup\n\n")
        spec = self.spec()
        w(
            f"- Runs: {', '.join(self.methods)}; categories {', '.join(cats)}; "
            f"seeds {', '.join(map(str, self.seeds))}; "
            f"{spec['steps']} steps each at {spec['image_size']}² (CPU preset), extra ns-train args: "
            f"`{spec['train_args'] or '(none)'}`.\n"
        )
        w(
            f"- Evaluation: protocol v2 (`configs/protocols/<category>_test_v2.json`), "
            f"the first {self.eval_pairs} pairs of "
            "each kind: same-view cross-instance (v1's pairs: both objects conditioned on the same view index), "
            "novel-view (one instance), and cross-view cross-instance (source conditioned on view i, target on view j, "
            "optical axes ≥ 60° apart). Cosine nearest neighbour on the model's features; priors by Euclidean distance "
            "of positions. PSNR/SSIM over every test instance x 4 novel views from one input view.\n"
        )
        w(
            "- Baselines, labelled by what they use: teacher 2D (DINOv2 on the real image of each view; 3D points "
            "projected into the input view); untrained network (the architecture at its seeded initialisation); "
            "view-frame position prior (no features: the ground-truth surface point's position in its conditioning "
            "camera's frame, the shortcut the field can take); alignment oracle (position in the aligned object frame, "
            "which photos do not give).\n\n"
        )
        w("Commands of the runs (from each run's `train_done.json`):\n\n")
        for cat in cats:
            for method in self.methods:
                for seed in self.seeds:
                    p = self.run_dir(cat, method, seed) / "train_done.json"
                    if p.is_file():
                        r = json.loads(p.read_text())
                        w(
                            f"- {cat} / {method} / seed {seed}: {r['steps']} steps, "
                            f"{(r.get('train_s') or float('nan')) / 60:.1f} training minutes (wall; "
                            f"{(r.get('train_cpu_s') or float('nan')) / 60:.1f} CPU minutes): `{r['command']}`\n"
                        )
        w("\n## Acceptance checks (cross-view protocol)\n\n")
        for cat in cats:
            w(f"**{cat}**\n\n" + "\n".join(acceptance(entries, baselines, cat)) + "\n\n")

        w("## Tab. 1: part co-segmentation mIoU (%)\n\n")
        w(
            table(
                entries,
                cats,
                PART_ROWS,
            )
        )
        w("\n## Keypoint transfer PCK (%)\n\n")
        w(
            table(
                entries,
                cats,
                [
                    ("2D same-view @10px", "kp2d_cross/pck@10"),
                    ("2D cross-view @10px", "kp2d_xview/pck@10"),
                    ("3D same-view @0.1", "kp3d_cross/pck@0.1"),
                    ("3D cross-view @0.1", "kp3d_xview/pck@0.1"),
                ],
            )
        )
        fig_dir.mkdir(parents=True, exist_ok=True)
        w("\n## Fig. 3: PCK vs threshold\n\n")
        for cat in cats:
            name = f"pck_{cat}.png"
            pck_figure(entries, cat, fig_dir / name)
            w(f"![PCK {cat}]({self.figures}/{name})\n\n")
        w("## Tab. 2: novel-view co-segmentation and keypoints (one instance, another view)\n\n")
        w(table(entries, cats, [("2D part mIoU", "part2d_novel/miou"), ("2D kp PCK@10", "kp2d_novel/pck@10")]))
        w(
            "\n## Tab. 3: ablation (part mIoU and 3D keypoint PCK@0.1; internal feature pre-activation, as the "
            "paper, and after ReLU)\n\n"
        )
        ablation = ("featurenerf", "featurenerf-nocoord", "featurenerf-nodistill")
        w(
            table(
                entries,
                cats,
                PART_ROWS + (("3D kp PCK@0.1 cross-view", "kp3d_xview/pck@0.1"),),
                keys=ablation + tuple(f"{f}:nerf_feature_relu" for f in ablation),
            )
        )
        w("\n## Tab. 4: novel-view synthesis\n\n")
        w("| | " + " | ".join(cats) + " |\n|---|" + "---:|" * len(cats) + "\n")
        fams = [k for k in ORDER if ":" not in k and k.startswith("featurenerf")]
        for key, title, digits in (
            ("psnr", "PSNR (dB)", 2),
            ("ssim", "SSIM", 3),
            ("steps", "steps", 0),
            ("train_min", "training minutes (wall)", 1),
            ("train_cpu_min", "training CPU minutes (all threads)", 1),
        ):
            for fam in fams:
                cells = []
                label = METHOD_LABELS.get(fam, fam).replace(", internal feature", "")
                for c in cats:
                    e = next((x for x in entries if x.category == c and x.key == fam), None)
                    cells.append(e.fmt(key, digits) if e else "—")
                if not all(x == "—" for x in cells):
                    w(f"| {title}: {label} | " + " | ".join(cells) + " |\n")
        w(
            "| PSNR (dB): untrained network | "
            + " | ".join(
                f"{baselines[c]['results'].get('untrained_psnr', float('nan')):.2f}" if c in baselines else "—"
                for c in cats
            )
            + " |\n"
        )
        w(
            "| PSNR (dB): all-black image | "
            + " | ".join(
                f"{baselines[c]['results'].get('black_psnr', float('nan')):.2f}" if c in baselines else "—"
                for c in cats
            )
            + " |\n"
        )
        w("\n## Learning curves (training callback)\n\n")
        for cat in cats:
            name = f"curves_{cat}.png"
            curves = [
                (m, seed, read_jsonl(p) if p.is_file() else [])
                for m in self.methods
                for seed in self.seeds
                for p in [self.run_dir(cat, m, seed) / "learning_curve.jsonl"]
            ]
            if curves_figure(curves, cat, fig_dir / name, label_seeds=len(self.seeds) > 1):
                w(f"![curves {cat}]({self.figures}/{name})\n\n")
        w(self._psnr_slopes(cats, baselines))
        notes = self.out / "notes.md"
        if notes.is_file():  # the study's own reading (hand-written, kept in the study folder)
            w("\n" + notes.read_text())
        atomic_write_bytes(md_path, buf.getvalue().encode())
        CONSOLE.print(buf.getvalue())
        CONSOLE.print(f"[green]wrote[/green] {md_path} and {fig_dir}/")
