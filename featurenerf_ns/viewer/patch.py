"""What FeatureNeRF changes in nerfstudio's ``ns-viewer`` (installed by the pipeline; ns-train's defaults come from
our method configs): bind to localhost and draw a bounded number of train cameras."""

from __future__ import annotations

import sys

MAX_DISPLAY_IMAGES = 50
"""Train cameras drawn by the viewer (nerfstudio draws up to 512; a multi-instance set has thousands, from many
objects, and drawing them slows a browser to a crawl)."""


def prefer_localhost_for_ns_viewer() -> None:
    """``ns-viewer`` binds 0.0.0.0 and draws 512 train cameras unless told otherwise; for FeatureNeRF checkpoints
    make its defaults 127.0.0.1 and MAX_DISPLAY_IMAGES (explicit ``--viewer.websocket-host`` /
    ``--viewer.max-num-display-images`` are respected). ns-train's defaults come from our method configs."""
    mod = sys.modules.get("nerfstudio.scripts.viewer.run_viewer")
    if mod is None or getattr(mod._start_viewer, "_featurenerf_defaults", False):
        return
    given = {a.split("=")[0].replace("_", "-") for a in sys.argv if a.startswith("--viewer.")}
    original = mod._start_viewer

    def start_viewer(config, pipeline, step):
        if "--viewer.websocket-host" not in given and config.viewer.websocket_host == "0.0.0.0":
            config.viewer.websocket_host = "127.0.0.1"
        if "--viewer.max-num-display-images" not in given:
            config.viewer.max_num_display_images = MAX_DISPLAY_IMAGES
        return original(config, pipeline, step)

    start_viewer._featurenerf_defaults = True  # type: ignore[attr-defined]
    setattr(mod, "_start_viewer", start_viewer)
