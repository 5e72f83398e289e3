"""ns-viewer for FeatureNeRF: stable feature PCA, instance / source-view pickers, click-to-query similarity and
part-label transfer.

The pipeline owns a :class:`FeatureViewerPanel` (attribute ``featurenerf``); nerfstudio's viewer finds its
ViewerElements and shows them under "Custom Elements / featurenerf". Renders of the viewer's own render threads
are routed through :meth:`FeatureViewerPanel.render` (ns-eval and training renders are not): it conditions the
field on the chosen instance / source views (encoded once per change, cached), caps the resolution (the viewer
itself drops to ~30 px while the camera moves) and returns

- ``rgb``, ``depth``, ``accumulation``;
- ``feature_pca`` (distilled feature) and ``nerf_feature_pca`` (internal 3D feature): a PCA-3 colouring fitted once
  over a few instances (or the current one) and reused for every frame, so colours stay put and agree across
  instances; "Refit PCA" fits it again;
- ``similarity``: cosine similarity of every pixel's feature to a query feature (both centred on the PCA mean), set
  by clicking the object or by choosing one of the instance's annotated keypoints; the query stays when the
  instance changes (cross-instance correspondence);
- ``parts``: part labels transferred by nearest-neighbour feature matching from the labelled 3D points of a chosen
  source instance, over the rendered colour.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerSlider,
    ViewerText,
)
from torch import nn

from featurenerf_ns.cameras import cap_resolution, look_at_of, pinhole_camera, single_ray_bundle
from featurenerf_ns.eval.providers import field_point_features, view_camera
from featurenerf_ns.utils.precision import cpu_has_fast_bf16
from featurenerf_ns.viewer.compose import compose_outputs, fit_pca_colors
from featurenerf_ns.viewer.conditionings import ConditioningCache
from featurenerf_ns.viewer.inputs import Conditioning, ViewerInputError, parse_views, viewer_instances

if TYPE_CHECKING:
    from featurenerf_ns.teachers.pca import PcaColors

FEATURES = {"internal": "nerf_feature", "distilled": "feature"}
"""GUI label -> model output of the feature used by the similarity and parts outputs."""
NONE = "(none)"
PCA_FIT_INSTANCES = 4
PCA_FIT_RESOLUTION = 32
PART_POINTS = 4096


def in_viewer_render_thread() -> bool:
    try:
        from nerfstudio.viewer.render_state_machine import RenderStateMachine
    except ImportError:  # pragma: no cover
        return False
    return isinstance(threading.current_thread(), RenderStateMachine)


class FeatureViewerPanel(nn.Module):
    """The viewer controls and outputs of a FeatureNeRF pipeline (no parameters; an nn.Module only so that
    nerfstudio's viewer finds its elements). Element attributes are prefixed so that they list in GUI order
    (nerfstudio installs them sorted by name)."""

    def __init__(self, pipeline) -> None:
        super().__init__()
        object.__setattr__(self, "_pipeline", pipeline)  # not a submodule: no cycle in module traversal
        dm = pipeline.datamanager
        cat = dm.cat
        ids = viewer_instances(cat) or list(dm.train_ids)
        self._ids = ids
        self._labelled = ids if cat.has_annotations else []
        self._keypoint_names = cat.keypoint_names if cat.has_annotations else []
        num_views = len(cat.instance(ids[0]).poses)
        default_view = dm.config.eval_source_view % num_views
        distill = pipeline.model.config.distill
        gpu = torch.cuda.is_available()
        self._lock = threading.RLock()
        self._conditionings = ConditioningCache(dm, pipeline.model)
        self._pca: Optional[Tuple[tuple, Dict[str, "PcaColors"]]] = None  # (fit key, feature -> colouring)
        self._query: Optional[Dict[str, torch.Tensor]] = None
        self._parts: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._input_error = ""  # the last bad-input message (reported once)

        self.a1_instance = ViewerDropdown(
            "Instance", ids[0], ids, cb_hook=lambda _: None, hint="val/test instance that conditions the field"
        )
        self.a2_source_views = ViewerText(
            "Source views",
            str(default_view),
            cb_hook=lambda _: None,
            hint="comma-separated view indices of the instance, e.g. 0 or 0, 25",
        )
        self.a3_image = ViewerText(
            "Own image (path)",
            "",
            cb_hook=lambda _: None,
            hint="an image file used instead of the first source view (its camera is that view's)",
        )
        self.a4_feature = ViewerDropdown(
            "Feature",
            "internal",
            [k for k in FEATURES if distill or k == "internal"],
            cb_hook=lambda _: self._parts.clear(),
            hint="feature used by the similarity and parts outputs",
        )
        self.b1_pca_fit = ViewerDropdown(
            "PCA fitted on",
            "dataset",
            ["dataset", "instance"],
            cb_hook=self._reset_pca,
            hint=f"dataset: first {PCA_FIT_INSTANCES} instances (colours comparable across "
            "instances); instance: the current one",
        )
        self.b2_refit = ViewerButton("Refit PCA", cb_hook=self._reset_pca)
        self.c1_click = ViewerButton("Click object to set query", cb_hook=self._arm_click)
        self.c2_keypoint = ViewerDropdown(
            "Query keypoint",
            NONE,
            [NONE] + list(self._keypoint_names),
            cb_hook=self._keypoint_query,
            hint="use an annotated 3D keypoint of the current instance as the query",
        )
        self.c3_floor = ViewerSlider(
            "Similarity floor", 0.5, 0.0, 0.95, 0.05, hint="cosine similarity shown as 0 (the top of the map is 1)"
        )
        self.c4_query = ViewerText("Query", "none yet", disabled=True)
        self.d1_parts = ViewerDropdown(
            "Part source instance",
            NONE,
            [NONE] + list(self._labelled),
            cb_hook=lambda _: None,
            hint="labelled instance whose 3D part labels are transferred to the view",
        )
        self.e1_max_res = ViewerSlider(
            "Max render size (px)",
            512 if gpu else 128,
            32,
            1024,
            16,
            hint="renders larger than this are made at this size and upscaled",
        )
        self.e2_precision = ViewerDropdown(
            "Render precision",
            "float32" if gpu or not cpu_has_fast_bf16() else "bfloat16",
            ["bfloat16", "float32"],
            hint="bfloat16 autocast: ~1.5x faster on CPUs with bf16 instructions",
        )
        self.e3_goto = ViewerButton("Camera to source view", cb_hook=lambda _: self.camera_to_source_view())
        self.viewer_control = _PanelControl(self)
        pipeline.model.attach_viewer(self)

    # ------------------------------------------------------------------ plumbing
    @property
    def _model(self):
        return self._pipeline.model

    @property
    def _dm(self):
        return self._pipeline.datamanager

    def handles(self) -> bool:
        """True for a render requested by one of the viewer's render threads."""
        return in_viewer_render_thread()

    def _message(self, text: str, style: str = "yellow") -> None:
        CONSOLE.print(f"[{style}]viewer: {text}[/{style}]")

    def _with_conditioning(self, cond: Conditioning, fn: Callable):
        """Run fn with the model conditioned on ``cond`` in the panel's render precision; the previous conditioning
        (e.g. training's) is restored."""
        m = self._model
        with m.conditioned(cond.sources, cond.maps), m.precision_override(self.e2_precision.value):
            return fn()

    @torch.no_grad()
    def conditioning(
        self, instance: Optional[str] = None, views: Optional[Tuple[int, ...]] = None, image: Optional[str] = None
    ) -> Conditioning:
        """The (cached) conditioning of an instance's source views, optionally with a user image in place of the
        first view; unset arguments take the GUI's values. Encodes only when it was not cached."""
        inst = instance if instance is not None else self.a1_instance.value
        it = self._dm.instance(inst)
        views = views if views is not None else parse_views(self.a2_source_views.value, it.rgba.shape[0])
        image = (self.a3_image.value if image is None else image).strip()
        return self._conditionings.get(inst, views, Path(image).expanduser() if image else None)

    def _views_or_default(self, instance: str) -> Tuple[int, ...]:
        """The GUI's source views, or the data manager's eval source view when the GUI's list is invalid."""
        num_views = len(self._dm.cat.instance(instance).poses)
        try:
            return parse_views(self.a2_source_views.value, num_views)
        except ViewerInputError:
            return (self._dm.config.eval_source_view % num_views,)

    def _current_conditioning(self) -> Conditioning:
        """The GUI's conditioning; a bad source-view list or image is reported once and ignored."""
        try:
            cond = self.conditioning()
            self._input_error = ""
            return cond
        except ViewerInputError as e:
            if str(e) != self._input_error:
                self._message(f"{e} (ignored)")
                self._input_error = str(e)
            return self.conditioning(views=self._views_or_default(self.a1_instance.value), image="")

    def feature_names(self) -> List[str]:
        return self._model.feature_names()

    # ------------------------------------------------------------------ rendering
    def _render_camera(self, cond: Conditioning, camera: Cameras, obb_box=None) -> Dict[str, torch.Tensor]:
        # rays per chunk: the model's eval_num_rays_per_chunk (256 on CPU in our presets; checkpoints trained before
        # that default render with their saved 4096, ~2x slower on CPU but identical)
        m = self._model
        return self._with_conditioning(
            cond, lambda: Model.get_outputs_for_camera(m, camera.to(m.device), obb_box=obb_box)
        )

    def _view_render(self, cond: Conditioning, resolution: int) -> Dict[str, torch.Tensor]:
        """Render the conditioning's first source view (what the encoder saw) at ``resolution``."""

        c2w, focal = view_camera(self._dm.cat, cond.instance, cond.views[0], resolution)
        return self._render_camera(cond, pinhole_camera(c2w, focal, (resolution, resolution)))

    def _reset_pca(self, _=None) -> None:
        self._pca = None

    @torch.no_grad()
    def pca(self, cond: Conditioning) -> Dict[str, "PcaColors"]:
        """PCA colourings per feature, fitted once (dataset mode) or once per conditioning (instance mode)."""
        mode = self.b1_pca_fit.value
        key = (mode,) if mode == "dataset" else (mode, cond.key)
        if self._pca is not None and self._pca[0] == key:
            return self._pca[1]
        conds = (
            [cond]
            if mode == "instance"
            else [self.conditioning(i, views=cond.views, image="") for i in self._ids[:PCA_FIT_INSTANCES]]
        )
        names = self.feature_names()
        renders = [self._view_render(c, PCA_FIT_RESOLUTION) for c in conds]
        self._pca = (key, fit_pca_colors(renders, names))
        self._message(f"PCA of {', '.join(names)} fitted on {len(conds)} instance(s) ({mode})", style="green")
        return self._pca[1]

    def _cap(self, camera: Cameras) -> Cameras:
        return cap_resolution(camera, int(self.e1_max_res.value))

    @torch.no_grad()
    def render(self, camera: Cameras, obb_box=None) -> Dict[str, torch.Tensor]:
        with self._lock:
            cond = self._current_conditioning()
            with self._model.precision_override(self.e2_precision.value):
                out = self._render_camera(cond, self._cap(camera), obb_box)
            return self.compose({k: v.float() for k, v in out.items()}, cond)

    def compose(self, out: Dict[str, torch.Tensor], cond: Conditioning) -> Dict[str, torch.Tensor]:
        """Model outputs of a view -> the viewer's outputs (see the module docstring)."""
        name = FEATURES[self.a4_feature.value]
        source = self.d1_parts.value
        return compose_outputs(
            out,
            self.pca(cond),
            name,
            self._query,
            float(self.c3_floor.value),
            None if source == NONE else self.part_source(source, name, cond.views),
        )

    # ------------------------------------------------------------------ parts
    @torch.no_grad()
    def part_source(self, instance: str, name: str, views: Tuple[int, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), labels (P,)) of up to PART_POINTS labelled surface points of ``instance`` conditioned
        on its source ``views`` (the last one is kept)."""

        key = (instance, views, name)
        if key not in self._parts:
            src = self.conditioning(instance, views=views, image="")
            ann = self._dm.cat.shape_annotations(instance)
            pts, labels = ann["points"], ann["point_labels"].astype(np.int64)
            keep = np.linspace(0, len(pts) - 1, min(PART_POINTS, len(pts))).round().astype(np.int64)
            feats = self._with_conditioning(
                src, lambda: field_point_features(self._model, torch.from_numpy(pts[keep]).float(), [name])
            )[name]
            self._parts = {key: (feats, torch.from_numpy(labels[keep]))}
        return self._parts[key]

    # ------------------------------------------------------------------ camera
    def camera_to_source_view(self, clients=None) -> None:
        """Move the viewer camera(s) to the first source view's camera (what the encoder sees)."""
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as ratio

        ctl = self.viewer_control
        if getattr(ctl, "viewer", None) is None:
            return
        inst = self.a1_instance.value
        rec = self._dm.cat.instance(inst)
        fov, up, pos, target = look_at_of(rec.poses[self._views_or_default(inst)[0]], rec.height, rec.focal)
        for client in clients if clients is not None else ctl.viser_server.get_clients().values():
            with client.atomic():
                client.camera.fov = fov
                client.camera.up_direction = tuple(up)
                client.camera.position = tuple(pos * ratio)
                client.camera.look_at = tuple(target * ratio)

    # ------------------------------------------------------------------ queries
    def _set_query(self, feats: Dict[str, torch.Tensor], label: str) -> None:
        self._query = {k: v.reshape(-1).float() for k, v in feats.items()}
        self.c4_query.value = label
        self._message(f"query set: {label}", style="green")

    @torch.no_grad()
    def query_point(self, xyz: torch.Tensor, label: str) -> None:
        """Query = the field features at a 3D point of the current instance."""

        cond = self._current_conditioning()
        feats = self._with_conditioning(
            cond, lambda: field_point_features(self._model, xyz.view(1, 3), self.feature_names())
        )
        self._set_query(feats, label)

    @torch.no_grad()
    def query_ray(self, origin, direction, label: str) -> bool:
        """Query = the features rendered along one ray of the current instance; False if it misses the object."""
        m = self._model
        cond = self._current_conditioning()
        bundle = single_ray_bundle(origin, direction).to(m.device)

        def run():
            was = m.training
            m.eval()
            try:
                return m(bundle)
            finally:
                m.train(was)

        out = self._with_conditioning(cond, run)
        if float(out["accumulation"][0, 0]) < 0.5:
            self._message(
                f"clicked background of {cond.instance} (accumulation {float(out['accumulation'][0, 0]):.2f}); "
                "click on the object"
            )
            return False
        self._set_query({n: out[n][0] for n in self.feature_names()}, label)
        return True

    def _keypoint_query(self, element) -> None:
        name = element.value
        if name == NONE:
            return
        inst = self.a1_instance.value
        ann = self._dm.cat.shape_annotations(inst)
        k = self._keypoint_names.index(name)
        if not bool(ann["keypoint_present"][k]):
            self._message(f"instance {inst} has no keypoint {name!r}; choose another keypoint or instance")
            return
        with self._lock:
            self.query_point(torch.from_numpy(ann["keypoints"][k]).float(), f"keypoint {name} of {inst}")

    def _arm_click(self, _=None) -> None:
        ctl = self.viewer_control
        if getattr(ctl, "viewer", None) is None:
            self._message("click-to-query needs the viewer (ns-viewer / ns-train --vis viewer)")
            return

        def on_click(click: ViewerClick) -> None:
            lock = ctl.viewer.train_lock
            try:
                with lock if lock is not None else threading.Lock():
                    with self._lock:
                        hit = self.query_ray(
                            click.origin,
                            click.direction,
                            f"pixel ({click.screen_pos[0]:.2f}, {click.screen_pos[1]:.2f}) of {self.a1_instance.value}",
                        )
            finally:
                ctl.unregister_pointer_cb()
            if hit:
                ctl.viewer._trigger_rerender()

        ctl.register_pointer_cb("click", on_click)
        self._message("click on the object in the viewer to set the query", style="green")


class _PanelControl(ViewerControl):
    """The panel's handle on the viewer: pointer callbacks, and new clients start at the source view's camera."""

    def __init__(self, panel: FeatureViewerPanel) -> None:
        self._panel = panel

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        viewer.viser_server.on_client_connect(lambda client: self._panel.camera_to_source_view([client]))
