"""ns-viewer for N3F: query by click or box, feature-distance map, 2D and 3D segments, remove / extract toggles,
export of the segment.

The pipeline owns an :class:`N3FViewerPanel` (attribute ``n3f``); nerfstudio's viewer lists its elements under
"Custom Elements / n3f". Renders of the viewer's own render threads go through :meth:`N3FViewerPanel.render`
(``models.viewer_routing``): the resolution is capped, the chosen edit is applied to the density, and the outputs are

- ``rgb``, ``depth``, ``accumulation`` and ``feature_pca`` (the model's PCA-3 colouring, fitted once on training
  teacher features and stored in the checkpoint: the same colours in every frame and session);
- ``similarity``: 1 - d/2 with d = ||eta(F(r)) - eta(q)|| (eta = L2-normalise; 1 = the query), values below the
  floor shown as 0;
- ``segment``: the render with the pixels whose rendered feature is within tau of the query tinted red
  (the 2D trace of the 3D segment {x : d(f(x), q) <= tau}).

The query is the rendered feature of a clicked pixel, or the mean normalised feature of a box selection (then tau
is chosen from that render alone, as in the scene tasks). "Clean segment (3D grid)" (on by default) edits with the
segment cleaned on a grid as the scene tasks do (``segment_edit.segment_volume`` with the pipeline's
``scene_tasks`` settings; the component holding the clicked surface point, or the box's rendered surface points;
computed once per query and tau). "Show 3D segment" draws the segment's surface points
(``exporters.segment.surface_cloud`` of a few train cameras, computed once) as a point cloud in the scene;
"Export segment" writes the files of ``featurenerf-scene export`` (points, segment, mesh) to the "Export to" directory.
Both use the cleaned segment while the checkbox is on, the raw feature rule otherwise.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, cast

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerRectSelect,
    ViewerSlider,
    ViewerText,
)
from torch import nn

from featurenerf_ns.cameras import cap_resolution, ray_hits, single_ray_bundle
from featurenerf_ns.exporters.segment import ExportError, SurfaceCloud, export_segment, query_from_render, surface_cloud
from featurenerf_ns.model_components.segment_edit import (
    SegmentEdit,
    SegmentVolume,
    feature_distance,
    model_segment_volume,
)
from featurenerf_ns.viewer.panel import in_viewer_render_thread

EDITS = ("none", "remove", "extract")
EditMode = Literal["remove", "extract"]
SEGMENT_TINT = torch.tensor([1.0, 0.1, 0.1])
CLOUD_FRAMES = 6
"""Train cameras rendered (at half size) for the 3D segment's point cloud and the export."""


def similarity_map(feature: torch.Tensor, query: torch.Tensor, floor: float) -> torch.Tensor:
    """feature (..., D), query (D,) -> (..., 1) in [0, 1]: (1 - d/2 - floor) / (1 - floor), clipped."""
    s = 1.0 - feature_distance(feature, query) / 2.0
    return ((s - floor) / max(1.0 - floor, 1e-6)).clamp(0, 1)[..., None]


def segment_overlay(rgb: torch.Tensor, feature: torch.Tensor, query: torch.Tensor, tau: float) -> torch.Tensor:
    """rgb (..., 3), feature (..., D) -> rgb with the pixels within tau of the query tinted (..., 3)."""
    inside = (feature_distance(feature, query) <= tau)[..., None]
    tint = SEGMENT_TINT.to(rgb)
    return torch.where(inside, 0.4 * rgb + 0.6 * tint, rgb)


class N3FViewerPanel(nn.Module):
    """The viewer controls and outputs of an N3F pipeline (no parameters; an nn.Module only so that nerfstudio's
    viewer finds its elements; attribute prefixes give the GUI order)."""

    def __init__(self, pipeline) -> None:
        super().__init__()
        object.__setattr__(self, "_pipeline", pipeline)  # not a submodule
        gpu = torch.cuda.is_available()
        self._lock = threading.RLock()
        self._query: Optional[torch.Tensor] = None
        self._last: Optional[Dict[str, torch.Tensor]] = None  # feature / accumulation of the last viewer render
        self._last_camera: Optional[Cameras] = None  # its camera: a box query back-projects its pixels with it
        self._cloud: Optional[SurfaceCloud] = None
        self._seeds: Optional[torch.Tensor] = None  # surface points of the query selection (model frame)
        self._volume: Optional[Tuple[float, SegmentVolume]] = None  # (tau, cleaned segment) of the current query
        self.a1_click = ViewerButton("Click object to set query", cb_hook=self._arm_click)
        self.a2_box = ViewerButton("Box-select region to set query", cb_hook=self._arm_box)
        self.a3_query = ViewerText("Query", "none yet", disabled=True)
        self.b1_tau = ViewerSlider(
            "Segment threshold tau", 0.4, 0.05, 1.5, 0.025, hint="feature distance ||eta(f) - eta(q)|| in [0, 2]"
        )
        self.b2_floor = ViewerSlider("Similarity floor", 0.5, 0.0, 0.95, 0.05, hint="1 - d/2 shown as 0")
        self.b3_edit = ViewerDropdown(
            "Edit", "none", list(EDITS), hint="remove: density 0 inside the segment; extract: 0 outside it"
        )
        self.b4_clean = ViewerCheckbox(
            "Clean segment (3D grid)", True, hint="edit with the segment's connected component on a grid, dilated"
        )
        self.c1_show = ViewerButton("Show 3D segment", cb_hook=lambda _: self.show_segment())
        self.c2_export_dir = ViewerText("Export to", "exports/n3f_segment", hint="directory (relative to the cwd)")
        self.c3_export = ViewerButton("Export segment (PLY, mesh)", cb_hook=lambda _: self.export())
        self.d1_max_res = ViewerSlider(
            "Max render size (px)", 512 if gpu else 128, 32, 1024, 16, hint="larger renders are made at this size"
        )
        self.viewer_control = ViewerControl()
        pipeline.model.attach_viewer(self)

    @property
    def _model(self):
        return self._pipeline.model

    def handles(self) -> bool:
        return in_viewer_render_thread()

    def _message(self, text: str, style: str = "yellow") -> None:
        CONSOLE.print(f"[{style}]viewer: {text}[/{style}]")

    # ------------------------------------------------------------------ rendering
    def edit(self) -> Optional[SegmentEdit]:
        mode = self.b3_edit.value
        if mode == "none" or self._query is None:
            return None
        tau = float(self.b1_tau.value)
        volume = self.volume(tau) if self.b4_clean.value else None
        return SegmentEdit(self._query.to(self._model.device), tau, cast(EditMode, mode), volume)

    @torch.no_grad()
    def volume(self, tau: float) -> SegmentVolume:
        """The current query's segment cleaned on a grid (cached per query and tau)."""
        assert self._query is not None
        if self._volume is None or self._volume[0] != tau:
            pipeline: Any = self._pipeline
            tasks = pipeline.config.scene_tasks  # SceneTaskConfig: the scene tasks' segment settings
            with self._lock:
                vol = model_segment_volume(
                    self._model, self._query, tau, tasks.tau_sigma, self._seeds, tasks.cleanup_settings
                )
            self._volume = (tau, vol)
        return self._volume[1]

    @torch.no_grad()
    def render(self, camera: Cameras, obb_box=None) -> Dict[str, torch.Tensor]:
        cap_resolution(camera, int(self.d1_max_res.value))
        m = self._model
        with self._lock, m.editing(self.edit()):
            out = Model.get_outputs_for_camera(m, camera.to(m.device), obb_box=obb_box)
        shown = self.compose(out)
        if self._last is not None and "depth" in out:  # rays are made only when a box is drawn on this render
            self._last["depth"], self._last_camera = out["depth"].float().cpu(), camera.to("cpu")
        return shown

    def compose(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Model outputs of a view -> the viewer's outputs (see the module docstring); the raw D-dim feature is
        kept for box queries, not shown."""
        shown = {k: v for k, v in out.items() if k != "feature" and not k.startswith("prop_depth")}
        if "feature" not in out:
            return shown
        feat = out["feature"].float()
        self._last = {"feature": feat.cpu(), "accumulation": out["accumulation"][..., 0].float().cpu()}
        if self._query is not None:  # the same output keys before and after a query (the viewer's output list)
            q = self._query.to(feat.device)
            shown["similarity"] = similarity_map(feat, q, float(self.b2_floor.value))
            shown["segment"] = segment_overlay(out["rgb"].float(), feat, q, float(self.b1_tau.value))
        else:
            shown["similarity"] = torch.zeros_like(out["accumulation"])
            shown["segment"] = out["rgb"].float()
        return shown

    # ------------------------------------------------------------------ queries
    def _set_query(self, query: torch.Tensor, label: str, seeds: Optional[torch.Tensor] = None) -> None:
        self._query = query.reshape(-1).float().cpu()
        self._seeds, self._volume = (None if seeds is None else seeds.reshape(-1, 3).float().cpu()), None
        self.a3_query.value = label
        self._message(f"query set: {label}", style="green")

    @torch.no_grad()
    def query_ray(self, origin, direction, label: str) -> bool:
        """Query = the feature rendered along one ray (model frame); False when the ray misses the scene."""
        m = self._model
        bundle = single_ray_bundle(origin, direction).to(m.device)
        was = m.training
        m.eval()
        try:
            with self._lock:
                out = m(bundle)
        finally:
            m.train(was)
        acc = float(out["accumulation"][0, 0])
        if acc < 0.5:
            self._message(f"clicked background (accumulation {acc:.2f}); click on an object")
            return False
        hit = ray_hits(bundle.origins[0], bundle.directions[0], out["depth"][0])
        self._set_query(out["feature"][0], label, hit)
        return True

    def query_box(self, min_bounds, max_bounds) -> bool:
        """Query = the mean feature of a box (normalised screen bounds, OpenCV convention) of the last render; tau
        is set from that render alone. False when there is no render yet or the box covers no surface."""
        if self._last is None:
            self._message("no render yet to select in; wait for the view to render, then draw the box")
            return False
        acc = self._last["accumulation"]
        H, W = acc.shape
        x0, y0 = int(min_bounds[0] * W), int(min_bounds[1] * H)
        x1, y1 = max(int(round(max_bounds[0] * W)), x0 + 1), max(int(round(max_bounds[1] * H)), y0 + 1)
        region = torch.zeros(H, W, dtype=torch.bool)
        region[max(0, y0) : min(H, y1), max(0, x0) : min(W, x1)] = True
        try:
            query, tau = query_from_render(self._last["feature"], acc, region, "the box")
        except ExportError as e:
            self._message(str(e))
            return False
        seeds = None  # the box's rendered surface points: the cleaned segment keeps the component they touch
        if "depth" in self._last and self._last_camera is not None:
            keep = region & (acc >= 0.5)
            bundle = self._last_camera.generate_rays(camera_indices=0, keep_shape=True)
            seeds = ray_hits(bundle.origins[keep], bundle.directions[keep], self._last["depth"][keep])
        self._set_query(query, f"box ({x0}, {y0})-({x1}, {y1}) of a {W}x{H} render, tau {tau:.3f}", seeds)
        self.b1_tau.value = tau
        return True

    def _arm(self, event: str, handler, prompt: str) -> None:
        ctl = self.viewer_control
        if getattr(ctl, "viewer", None) is None:
            self._message("selecting a query needs the viewer (ns-viewer / ns-train --vis viewer)")
            return

        def on_event(ev) -> None:
            lock = ctl.viewer.train_lock
            try:
                with lock if lock is not None else threading.Lock():
                    hit = handler(ev)
            finally:
                ctl.unregister_pointer_cb()
            if hit:
                ctl.viewer._trigger_rerender()

        ctl.register_pointer_cb(event, on_event)  # type: ignore[call-overload]
        self._message(prompt, style="green")

    def _arm_click(self, _=None) -> None:
        def on_click(click: ViewerClick) -> bool:
            pos = f"({click.screen_pos[0]:.2f}, {click.screen_pos[1]:.2f})"
            return self.query_ray(click.origin, click.direction, f"pixel {pos}")

        self._arm("click", on_click, "click on an object in the viewer to set the query")

    def _arm_box(self, _=None) -> None:
        def on_box(box: ViewerRectSelect) -> bool:
            return self.query_box(box.min_bounds, box.max_bounds)

        self._arm("rect-select", on_box, "draw a box over an object in the viewer to set the query")

    # ------------------------------------------------------------------ 3D segment and export
    def cloud(self) -> SurfaceCloud:
        if self._cloud is None:
            self._message(f"rendering {CLOUD_FRAMES} train cameras for the surface points (once)", style="green")
            with self._lock:
                self._cloud = surface_cloud(self._pipeline, CLOUD_FRAMES, 0.5)
        return self._cloud

    @torch.no_grad()
    def segment_points(self):
        """(points (N, 3) model frame, rgb (N, 3)) of the current segment, or None without a query."""
        if self._query is None:
            self._message("set a query first (click or box)")
            return None
        c = self.cloud()
        tau = float(self.b1_tau.value)
        if self.b4_clean.value:
            inside = self.volume(tau).contains(c.points)
        else:
            inside = feature_distance(c.feature, self._query) <= tau
        return c.points[inside], c.rgb[inside]

    def show_segment(self) -> None:
        seg = self.segment_points()
        if seg is None:
            return
        points, rgb = seg
        ctl = self.viewer_control
        if getattr(ctl, "viewer", None) is None:
            self._message(f"3D segment: {len(points)} surface points (no viewer to draw them in)")
            return
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as ratio

        ctl.viser_server.scene.add_point_cloud(
            "/n3f_segment", (points * ratio).numpy(), rgb.numpy(), point_size=0.01 * ratio
        )
        self._message(f"3D segment drawn: {len(points)} surface points", style="green")

    def export(self, out_dir: Optional[Path] = None) -> Optional[Path]:
        """Write the segment's files (points.ply, segment.ply, points.npz, segment_mesh.ply, export.json)."""
        if self._query is None:
            self._message("set a query first (click or box)")
            return None
        p = self._pipeline
        out = Path(out_dir if out_dir is not None else self.c2_export_dir.value).expanduser()
        tau = float(self.b1_tau.value)
        volume = self.volume(tau) if self.b4_clean.value else None
        with self._lock:
            summary = export_segment(
                p, out, self._query, tau, self.cloud(), 96, info={"selection": self.a3_query.value}, volume=volume
            )
        self._message(f"exported {summary['segment_points']} segment points to {out}", style="green")
        return out
