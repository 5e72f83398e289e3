"""``featurenerf-spair``: keypoint transfer on SPair-71k's real photo pairs with a trained FeatureNeRF model (the
paper's real-image test), next to the same matching on the teacher's 2D features.

    featurenerf-spair --load-config <run>/config.yml --spair-root /data/SPair-71k --split test [--max-pairs 200] \\
        [--feature auto] --out outputs/spair

For each pair of the model's category (:func:`featurenerf_ns.eval.spair.spair_category`: chair, airplane ->
aeroplane, car, motorbike, bottle):

1. source and target photo are prepared like featurenerf-infer's photos (:func:`~featurenerf_ns.eval.spair.prepare_side`
   around :func:`featurenerf_ns.data.photo.prepare_photo`): foreground = the SPair mask inside the pair's box, else
   the box itself; cropped and rescaled to the training renders' typical box at the model resolution R, on black;
2. ``model``: each prepared image is encoded as view ``--view`` of the reference's fixed cameras (the
   :class:`~featurenerf_ns.viewer.conditionings.ConditioningCache` featurenerf-infer uses), and the chosen feature
   is rendered from that camera at the source keypoints' model pixels, F_s (K, D), and at the P target foreground
   pixels, F_t (P, D); ``teacher-2D``: the teacher's map of each prepared image (its mask as alpha) sampled
   bilinearly at the same pixels;
3. keypoint k goes to the target pixel argmax_p cos(F_s[k], F_t[p]), mapped back to target photo pixels
   (PreparedPhoto.to_photo), and PCK is computed there against the target box (SPair's definition, alpha 0.05 /
   0.1 / 0.15). A keypoint outside the prepared crop is still matched (its query is read at the nearest frame
   pixel) and counted in results.json; a pair whose photo prepare_photo cannot use is listed under ``skipped``.

Writes ``results.json`` (PCK per keypoint and per pair, per category and viewpoint variation, counts, the command)
and ``pairs.png`` (the first ``--figure-pairs`` pairs: lines from each source keypoint to its transferred position,
green when within alpha = 0.1, red otherwise).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_json
from featurenerf_ns.data.photo import PhotoError
from featurenerf_ns.eval.spair import (
    DEFAULT_ALPHA,
    THRESHOLDS,
    PCKAccumulator,
    SPairDataset,
    SPairPair,
    SPairSide,
    match_keypoints,
    prepare_side,
    query_pixels,
    spair_category,
)
from featurenerf_ns.utils.cli import make_console, progress_bar, run_command

CONSOLE = make_console()
MODEL, TEACHER = "model", "teacher-2D"


def _png(arr: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path)
    return path


class _Matcher:
    """What every pair needs: the model conditioned on a prepared photo posed as the reference's view, its camera,
    and the teacher; ``features(method, side, image_path, xy)`` -> (N, D) at model pixel centres xy (N, 2)."""

    def __init__(self, pipeline, reference: Optional[str], view: int, feature: str, teacher: bool):
        from featurenerf_ns.data.photo import typical_box
        from featurenerf_ns.eval.providers import view_camera
        from featurenerf_ns.scripts.infer import BOX_INSTANCES
        from featurenerf_ns.viewer.conditionings import ConditioningCache

        dm, model = pipeline.datamanager, pipeline.model
        self.dm, self.model, self.cat = dm, model, dm.cat
        self.feature = model.resolve_feature(feature, "spair")
        fixed = self.cat.ids("val") + self.cat.ids("test")  # the instances rendered from the fixed camera set
        self.reference = reference or (fixed or self.cat.ids("train"))[0]
        try:
            nv = len(self.cat.instance(self.reference).poses)
        except (KeyError, FeatureNeRFDataError):
            raise FeatureNeRFDataError(
                f"spair: --reference {self.reference!r} is not an instance of {self.cat.root}; e.g. "
                f"{', '.join((fixed or self.cat.ids('train'))[:3])}"
            ) from None
        self.view = view % nv
        self.resolution = R = dm.instance(self.reference).hw[0]
        same_cameras = [self.reference] + (fixed if self.reference in fixed else [])
        masks = [
            dm.instance(i).rgba[self.view, 3].numpy() > 127 for i in list(dict.fromkeys(same_cameras))[:BOX_INSTANCES]
        ]  # render alphas: where the training renders put the object, seen from this camera
        self.box = typical_box(masks, R)
        self.camera = view_camera(self.cat, self.reference, self.view, R)
        self.conds = ConditioningCache(dm, model)
        self.teacher = None
        self.teacher_note = "disabled (--no-teacher)"
        if teacher:
            from featurenerf_ns.teachers import TeacherError

            try:
                self.teacher = dm.config.teacher.setup(device=str(model.device))
                self.teacher_note = self.teacher.label or dm.config.teacher.name
            except (TeacherError, OSError) as e:
                self.teacher_note = f"skipped: {e}"
                CONSOLE.print(f"[yellow]teacher-2D baseline skipped: {e}[/yellow]")
        self.methods = [MODEL] + ([TEACHER] if self.teacher is not None else [])

    def features(self, method: str, side: SPairSide, image: Path, xy: np.ndarray):
        import torch

        from featurenerf_ns.eval.providers import render_pixel_features
        from featurenerf_ns.model_components.map_sampling import sample_map

        xy_t = torch.from_numpy(np.asarray(xy, dtype=np.float32))
        R = self.resolution
        if method == MODEL:
            from featurenerf_ns.viewer.inputs import ViewerInputError

            try:  # the encoder sees the prepared image itself, posed as the reference's view
                pc = self.conds.get(self.reference, (self.view,), image)
            except ViewerInputError as e:
                raise FeatureNeRFDataError(str(e)) from None
            c2w, focal = self.camera
            with self.model.precision_override("float32"), self.model.conditioned(pc.sources, pc.maps):
                return render_pixel_features(self.model, c2w, focal, xy_t, R, [self.feature])[self.feature].cpu()
        assert self.teacher is not None
        rgb = torch.from_numpy(side.photo.image).permute(2, 0, 1)[None]
        alpha = torch.from_numpy(side.photo.mask.astype(np.float32))[None, None]
        fmap = self.teacher.extract(rgb, alpha, category=self.cat.category).features
        return sample_map(fmap, xy_t[None].to(fmap.device), (R, R))[0].float().cpu()


def transfer_pair(matcher: _Matcher, pair: SPairPair, workdir: Path, tag: str) -> Dict[str, Any]:
    """The steps of the module docstring for one pair: per method the transferred keypoints (K, 2) in target photo
    pixels, plus the foregrounds and the crop counts."""
    from featurenerf_ns.exporters.photo_transfer import pixel_grid

    R, box = matcher.resolution, matcher.box
    src = prepare_side(pair.src_image, pair.src_mask, pair.src_bbox, pair.src_imsize, R, box, workdir, f"{tag}_src")
    trg = prepare_side(pair.trg_image, pair.trg_mask, pair.trg_bbox, pair.trg_imsize, R, box, workdir, f"{tag}_trg")
    if not trg.photo.mask.any():
        raise PhotoError(f"{pair.trg_image}: no foreground pixel left at the model resolution {R}")
    q_xy, src_out = query_pixels(src.to_model(pair.src_kps), R)
    trg_uv = trg.to_model(pair.trg_kps)
    trg_out = ~((trg_uv >= 0) & (trg_uv < R)).all(1)
    ij = q_xy.astype(np.int64)
    src_off = ~src.photo.mask[ij[:, 1], ij[:, 0]]
    cand_xy = pixel_grid(trg.photo.mask).numpy()
    s_img = _png((src.photo.image * 255).round().astype(np.uint8), workdir / f"{tag}_src.png")
    t_img = _png((trg.photo.image * 255).round().astype(np.uint8), workdir / f"{tag}_trg.png")
    preds: Dict[str, np.ndarray] = {}
    sims: Dict[str, np.ndarray] = {}
    for m in matcher.methods:
        f_s = matcher.features(m, src, s_img, q_xy)
        f_t = matcher.features(m, trg, t_img, cand_xy)
        uv, sim = match_keypoints(f_s, f_t, cand_xy)
        preds[m], sims[m] = trg.to_photo(uv), sim
    return dict(
        src=src, trg=trg, preds=preds, sims=sims,
        src_outside=int(src_out.sum()), trg_outside=int(trg_out.sum()), src_off_foreground=int(src_off.sum()),
    )  # fmt: skip


def pairs_figure(path: Path, shown: List[Tuple[SPairPair, Dict[str, Any]]], methods: List[str], title: str) -> None:
    """One row per pair, one column per method: source | target photo side by side, a line from each source
    keypoint to its transferred target position, green when within alpha = 0.1 of the truth (white ring), red
    otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featurenerf_ns.eval.figures import save_fig
    from featurenerf_ns.eval.spair import pck_correct

    rows, cols = len(shown), len(methods)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.0 * rows), squeeze=False)
    for r, (pair, res) in enumerate(shown):
        a, b = res["src"].rgb, res["trg"].rgb
        h = max(a.shape[0], b.shape[0])
        canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
        canvas[: a.shape[0], : a.shape[1]] = a
        canvas[: b.shape[0], a.shape[1] :] = b
        for c, m in enumerate(methods):
            ax = axes[r, c]
            ax.imshow(canvas)
            pred = res["preds"][m]
            ok = pck_correct(pred, pair.trg_kps, pair.trg_bbox, DEFAULT_ALPHA)
            for k in range(pair.num_keypoints):
                (x0, y0), (x1, y1) = pair.src_kps[k] - 0.5, pred[k] - 0.5
                col = "#2ca02c" if ok[k] else "#d62728"
                ax.plot([x0, x1 + a.shape[1]], [y0, y1], color=col, linewidth=1.0)
                ax.scatter([x0], [y0], s=10, color=col)
                gx, gy = pair.trg_kps[k] - 0.5
                ax.scatter([gx + a.shape[1]], [gy], s=18, facecolors="none", edgecolors="white", linewidths=0.7)
            ax.set_title(f"{m}: {pair.name} ({int(ok.sum())}/{len(ok)} at alpha {DEFAULT_ALPHA})", fontsize=8)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_fig(fig, path)
    plt.close(fig)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


@dataclass
class Spair:
    """PCK of keypoint transfer on SPair-71k photo pairs: a trained FeatureNeRF model vs its teacher in 2D."""

    load_config: Path
    spair_root: Path
    """The unpacked SPair-71k/ folder (PairAnnotation/, JPEGImages/, optional Segmentation/ and Layout/)."""
    split: str = "test"
    """trn (or train) | val | test."""
    max_pairs: Optional[int] = None
    """Only the first N pairs of the model's category (in the layout file's order)."""
    feature: Literal["auto", "feature", "nerf_feature"] = "auto"
    """nerf_feature | feature (distilled) | auto: the distilled head when the model has one."""
    teacher: bool = True
    """Also score the teacher-2D baseline (the teacher of the run's config, applied to the prepared photos)."""
    reference: Optional[str] = None
    """Instance whose fixed camera the photos are posed as (default: the first val instance, else test)."""
    view: int = 0
    """That camera: a view index of the reference (0: canonical)."""
    figure_pairs: int = 4
    """Pairs drawn in pairs.png (0: no figure)."""
    out: Path = Path("outputs/spair")
    progress: bool = True

    def command(self) -> str:
        parts = ["featurenerf-spair"]
        for f in fields(self):
            v, flag = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                parts.append(flag if v else "--no-" + f.name.replace("_", "-"))
            elif v is not None:
                parts += [flag, str(v)]
        return " ".join(parts)

    def main(self) -> None:
        from rich.table import Table

        from featurenerf_ns.scripts.export import load_featurenerf

        dataset = SPairDataset(self.spair_root, self.split)  # bad folders fail before the model loads
        pipeline, step = load_featurenerf(self.load_config)
        category = spair_category(pipeline.datamanager.cat.category)
        pairs = list(dataset.pairs(category, self.max_pairs))
        if not pairs:
            raise FeatureNeRFDataError(
                f"{dataset.ann_dir}: no {category} pairs in split {dataset.split}; pass the split holding them "
                "or a model of another category"
            )
        matcher = _Matcher(pipeline, self.reference, self.view, self.feature, self.teacher)
        acc = {m: PCKAccumulator(THRESHOLDS) for m in matcher.methods}
        records: List[Dict[str, Any]] = []
        skipped: List[Dict[str, str]] = []
        shown: List[Tuple[SPairPair, Dict[str, Any]]] = []
        counts = dict(src_keypoints_outside_crop=0, trg_keypoints_outside_crop=0, src_keypoints_off_foreground=0)
        fg_counts = {"mask": 0, "bbox": 0}
        self.out.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(prefix="spair_") as tmp,
            progress_bar(self.progress, f"spair {category} pairs ({matcher.feature})", len(pairs)) as advance,
        ):
            for i, pair in enumerate(pairs):
                try:
                    res = transfer_pair(matcher, pair, Path(tmp), f"{i:06d}")
                except PhotoError as e:
                    skipped.append({"pair": pair.name, "reason": str(e)})
                    advance()
                    continue
                counts["src_keypoints_outside_crop"] += res["src_outside"]
                counts["trg_keypoints_outside_crop"] += res["trg_outside"]
                counts["src_keypoints_off_foreground"] += res["src_off_foreground"]
                for side in ("src", "trg"):
                    fg_counts[res[side].foreground] += 1
                rec: Dict[str, Any] = {
                    "pair": pair.name,
                    "category": pair.category,
                    "viewpoint_variation": pair.viewpoint_variation,
                    "keypoints": pair.num_keypoints,
                    "foreground": [res["src"].foreground, res["trg"].foreground],
                    "src_outside_crop": res["src_outside"],
                    "trg_outside_crop": res["trg_outside"],
                    "correct": {},
                    "pred": {},
                }
                for m in matcher.methods:
                    ok = acc[m].add(pair, res["preds"][m])
                    rec["correct"][m] = {str(a): int(c.sum()) for a, c in ok.items()}
                    rec["pred"][m] = np.round(res["preds"][m], 2).tolist()
                records.append(rec)
                if len(shown) < self.figure_pairs:
                    shown.append((pair, res))
                advance()
        summary = {m: acc[m].summary() for m in matcher.methods}
        result = {
            "command": self.command(),
            "config": str(self.load_config),
            "step": step,
            "spair_root": str(self.spair_root),
            "split": dataset.split,
            "category": category,
            "model_category": matcher.cat.category,
            "feature": matcher.feature,
            "reference": matcher.reference,
            "view": matcher.view,
            "resolution": matcher.resolution,
            "teacher": matcher.teacher_note,
            "foreground_rule": "SPair mask inside the pair's box when the mask exists and is non-empty there, "
            "else the box",
            "thresholds": list(THRESHOLDS),
            "alpha": DEFAULT_ALPHA,
            "counts": {
                "pairs_listed": len(pairs),
                "pairs": len(records),
                "pairs_skipped": len(skipped),
                "keypoints": int(sum(r["keypoints"] for r in records)),
                **counts,
                "foreground": fg_counts,
            },
            "methods": summary,
            "skipped": skipped,
            "pairs": records,
            "files": ["results.json"] + (["pairs.png"] if shown else []),
        }
        if shown:
            pairs_figure(
                self.out / "pairs.png", shown, matcher.methods,
                f"SPair-71k {category} ({dataset.split}): {matcher.feature}, step {step}; green within "
                f"{DEFAULT_ALPHA} x box",
            )  # fmt: skip
        atomic_write_json(self.out / "results.json", result)
        table = Table(title=f"SPair-71k {category} {dataset.split}: {len(records)} pairs, "
                      f"{result['counts']['keypoints']} keypoints (PCK %, per keypoint)")  # fmt: skip
        table.add_column("method")
        for a in THRESHOLDS:
            table.add_column(f"@{a:g}", justify="right")
        table.add_column(f"@{DEFAULT_ALPHA:g} per pair", justify="right")
        vvs = sorted({v for s in summary.values() for v in s["per_viewpoint_variation"]})
        for v in vvs:
            table.add_column(f"@{DEFAULT_ALPHA:g} vp {v}", justify="right")
        for m, s in summary.items():
            label = m if m == TEACHER else f"{m} ({matcher.feature})"
            table.add_row(
                label,
                *[_fmt(s["pck"][str(a)]) for a in THRESHOLDS],
                _fmt(s["pck_per_pair"][str(DEFAULT_ALPHA)]),
                *[_fmt(s["per_viewpoint_variation"].get(v, {}).get("pck", {}).get(str(DEFAULT_ALPHA))) for v in vvs],
            )
        CONSOLE.print(table)
        if skipped:
            CONSOLE.print(f"[yellow]{len(skipped)} pair(s) skipped (photo unusable), listed in results.json[/yellow]")
        CONSOLE.print(
            f"[green]spair:[/green] keypoints outside the prepared crop: {counts['src_keypoints_outside_crop']} source,"
            f" {counts['trg_keypoints_outside_crop']} target (scored) -> {self.out}/results.json"
        )


def entrypoint() -> None:
    run_command(Spair, (FeatureNeRFDataError, PhotoError))
