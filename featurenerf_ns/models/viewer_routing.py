"""Routing of the viewer's camera renders through a pipeline's viewer panel, shared by the FeatureNeRF and N3F models.

The pipeline attaches its panel with ``model.attach_viewer(panel)``; afterwards ``get_outputs_for_camera`` calls
``panel.render(camera, obb_box)`` when ``panel.handles()`` (a render of one of the viewer's render threads), and
nerfstudio's chunked render otherwise (ns-eval, training images, the report). The panel is stored outside the
module tree: it is an nn.Module only so that nerfstudio's viewer finds its elements, and must not become a
submodule (state dict, .to(), module traversal).
"""

from __future__ import annotations

from typing import Dict

import torch
from nerfstudio.models.base_model import Model


class ViewerRouting(Model):
    """Mixin for a nerfstudio Model: ``attach_viewer`` + the routed ``get_outputs_for_camera``."""

    def attach_viewer(self, panel) -> None:
        self.__dict__["_viewer_panel"] = panel

    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, torch.Tensor]:
        panel = self.__dict__.get("_viewer_panel")
        if panel is not None and panel.handles():
            return panel.render(camera, obb_box=obb_box)
        return super().get_outputs_for_camera(camera, obb_box=obb_box)
