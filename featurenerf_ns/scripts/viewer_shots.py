"""``featurenerf-viewer-shots``: start ``ns-viewer`` on a checkpoint headless, drive it from a real browser (Debian's
Chromium through Playwright), check the feature PCA view and save screenshots.

    featurenerf-viewer-shots --load-config outputs/.../config.yml --out docs/viewer

It checks, from the images the viewer streams to the browser, that ``feature_pca`` is non-constant and that two
renders of the same camera are identical (the PCA is fitted once, not per frame), then saves screenshots of the
feature PCA, a keypoint similarity query on this instance and on another one, a clicked query, and part transfer.
Needs ``pip install playwright`` (no browser download: it uses /usr/bin/chromium; ``apt-get install chromium``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.utils.cli import run_command
from featurenerf_ns.viewer.browser import (  # noqa: F401  (ViewerShotsError, check_browser: used by the tests)
    BrowserClient,
    ViewerProcess,
    ViewerShotsError,
    check_browser,
    free_port,
    non_constant,
)
from featurenerf_ns.viewer.inputs import viewer_instances


@dataclass
class CheckResult:
    feature_pca_std: float
    identical: bool
    differs_from_rgb: bool
    frame_shape: Tuple[int, ...]
    screenshots: List[Path]


def run_check(
    config: Path,
    out: Optional[Path],
    port: Optional[int] = None,
    keypoint: Optional[str] = None,
    other_instance: Optional[str] = None,
    part_source: Optional[str] = None,
    click: bool = True,
    log: Optional[Path] = None,
) -> CheckResult:
    """Start ns-viewer on ``config``, open it in Chromium, check feature_pca and (with ``out``) save screenshots."""
    check_browser()
    port = port or free_port()
    log = log or Path(out or ".") / "ns-viewer.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shots: List[Path] = []

    def shot(client: BrowserClient, name: str) -> None:
        if out is not None:
            client.screenshot(out / name)
            shots.append(out / name)

    with ViewerProcess(config, port, log), BrowserClient(f"http://127.0.0.1:{port}") as client:
        client.wait_settled(0.0)  # the first full-resolution frame
        t = client.select("Output type", "feature_pca")
        first = client.wait_settled(t)
        shot(client, "viewer_feature_pca.png")
        t = client.select("Output type", "rgb")
        rgb = client.wait_settled(t)
        shot(client, "viewer_rgb.png")
        t = client.select("Output type", "feature_pca")
        second = client.wait_settled(t)
        result = CheckResult(
            float(first.image.astype(np.float32).std()),
            first.image.shape == second.image.shape and bool(np.array_equal(first.image, second.image)),
            first.image.shape != rgb.image.shape or not np.array_equal(first.image, rgb.image),
            tuple(first.image.shape),
            shots,
        )
        if out is None:
            return result
        t = client.select("Output type", "nerf_feature_pca")
        client.wait_settled(t)
        shot(client, "viewer_nerf_feature_pca.png")
        t = client.select("Output type", "similarity")
        if keypoint:
            t = client.select("Query keypoint", keypoint)
            client.wait_settled(t)
            shot(client, "viewer_similarity_keypoint.png")
            if other_instance:
                t = client.select("Instance", other_instance)
                client.wait_settled(t)
                shot(client, "viewer_similarity_cross_instance.png")
        if click:
            t = client.click_button("Click object to set query")
            client.page.wait_for_timeout(1000)
            client.click_canvas(0.5, 0.55)
            client.wait_settled(t)
            shot(client, "viewer_similarity_click.png")
        if part_source:
            t = client.select("Output type", "parts")
            t = client.select("Part source instance", part_source)
            client.wait_settled(t)
            shot(client, "viewer_parts.png")
        return result


@dataclass
class N3FCheck:
    feature_pca_std: float
    identical: bool
    query_set: bool
    """The clicked pixel hit an object and set the query (from ns-viewer's log)."""
    edits_differ: bool
    """The removed and extracted renders differ from the unedited one."""
    screenshots: List[Path]


def run_n3f_check(config: Path, out: Path, click: Tuple[float, float] = (0.5, 0.55), port: Optional[int] = None,
                  log: Optional[Path] = None) -> N3FCheck:  # fmt: skip
    """ns-viewer on an n3f run in Chromium: stable feature_pca, a clicked query, the similarity and segment outputs,
    remove / extract edits and the 3D segment, with a screenshot of each."""
    check_browser()
    port = port or free_port()
    log = log or out / "ns-viewer.log"
    out.mkdir(parents=True, exist_ok=True)
    shots: List[Path] = []

    def shot(client: BrowserClient, name: str) -> None:
        client.screenshot(out / name)
        shots.append(out / name)

    with ViewerProcess(config, port, log), BrowserClient(f"http://127.0.0.1:{port}") as client:
        base = client.wait_settled(0.0)
        shot(client, "n3f_rgb.png")
        t = client.select("Output type", "feature_pca")
        first = client.wait_settled(t)
        shot(client, "n3f_feature_pca.png")
        t = client.select("Output type", "rgb")
        client.wait_settled(t)
        t = client.select("Output type", "feature_pca")
        second = client.wait_settled(t)
        t = client.click_button("Click object to set query")
        client.page.wait_for_timeout(1000)
        client.click_canvas(*click)
        client.page.wait_for_timeout(2000)
        t = client.select("Output type", "similarity")
        client.wait_settled(t)
        shot(client, "n3f_similarity.png")
        t = client.select("Output type", "segment")
        client.wait_settled(t)
        shot(client, "n3f_segment.png")
        t = client.select("Output type", "rgb")
        client.wait_settled(t)
        edited = []
        for mode in ("remove", "extract"):
            t = client.select("Edit", mode)
            edited.append(client.wait_settled(t).image)
            shot(client, f"n3f_{mode}.png")
        t = client.select("Edit", "none")
        client.wait_settled(t)
        t = client.click_button("Show 3D segment")
        client.page.wait_for_timeout(8000)
        client.wait_settled(t, quiet=2.0)
        shot(client, "n3f_segment_3d.png")
    text = log.read_text()
    return N3FCheck(
        float(first.image.astype(np.float32).std()),
        first.image.shape == second.image.shape and bool(np.array_equal(first.image, second.image)),
        "query set: pixel" in text,
        all(e.shape != base.image.shape or not np.array_equal(e, base.image) for e in edited),
        shots,
    )


def overview(out: Path, captions: List[Tuple[str, str]], size: Tuple[int, int] = (480, 375)) -> Path:
    """One captioned sheet (3 per row) of the 3D-view area of the given screenshots: [(file name, caption)]."""
    from PIL import Image, ImageDraw

    W, H = size
    rows = (len(captions) + 2) // 3
    sheet = Image.new("RGB", (W * 3, (H + 24) * rows), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i, (name, caption) in enumerate(captions):
        with Image.open(out / name) as im:
            w, h = im.size
            view = im.convert("RGB").crop((0, 51, int(w * 0.75), h)).resize((W, H))  # drop title bar and panel
        x, y = (i % 3) * W, (i // 3) * (H + 24)
        sheet.paste(view, (x, y + 24))
        draw.text((x + 8, y + 6), caption, fill=(235, 235, 235))
    path = out / "viewer_overview.png"
    sheet.save(path, optimize=True)
    return path


def run_category(config: Path):
    """The CategoryData a featurenerf run (its config.yml) was trained on."""
    import yaml

    if not config.is_file():
        raise ViewerShotsError(f"{config}: no such config; pass the config.yml of a featurenerf run")
    cfg = yaml.load(config.read_text(), Loader=yaml.Loader)
    dm = cfg.pipeline.datamanager
    return CategoryData(Path(cfg.data or dm.data or dm.dataparser.data), getattr(dm.dataparser, "category", None))


@dataclass
class ViewerShots:
    """Start ns-viewer on a checkpoint headless, check the feature PCA view in Chromium and save screenshots."""

    load_config: Path
    out: Path = Path("docs/viewer")
    keypoint: Optional[str] = None
    """Query keypoint for the similarity shots (default: the category's first keypoint)."""
    other_instance: Optional[str] = None
    """Instance switched to for the cross-instance similarity shot (default: the second val/test instance)."""
    part_source: Optional[str] = None
    """Labelled instance whose parts are transferred (default: the third val/test instance)."""
    port: Optional[int] = None
    click: Tuple[float, float] = (0.5, 0.55)
    """n3f runs: where to click (fractions of the 3D view) to set the query."""

    def main(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        if _method(self.load_config).startswith("n3f"):
            return self.main_n3f()
        cat = run_category(self.load_config)
        ids = viewer_instances(cat)
        kp = self.keypoint or (cat.keypoint_names[0] if cat.has_annotations and cat.keypoint_names else None)
        other = self.other_instance or (ids[1] if len(ids) > 1 else None)
        parts = self.part_source or (ids[2 % len(ids)] if cat.has_annotations else None)
        res = run_check(self.load_config, self.out, self.port, kp, other, parts)
        captions = [
            ("viewer_feature_pca.png", "feature_pca (distilled, PCA fitted once)"),
            ("viewer_nerf_feature_pca.png", "nerf_feature_pca (internal 3D feature)"),
        ]
        if kp:
            captions.append(("viewer_similarity_keypoint.png", f"similarity: keypoint {kp} of {ids[0]}"))
            if other:
                captions.append(("viewer_similarity_cross_instance.png", f"same query on another instance ({other})"))
        captions.append(("viewer_similarity_click.png", f"similarity: clicked query on {other or ids[0]}"))
        if parts:
            captions.append(("viewer_parts.png", f"parts transferred from {parts}"))
        res.screenshots.append(overview(self.out, [c for c in captions if (self.out / c[0]).is_file()]))
        ok = res.identical and res.differs_from_rgb and res.feature_pca_std > 2.0
        CONSOLE.print(
            f"feature_pca frame {res.frame_shape}: std {res.feature_pca_std:.1f}, two renders identical: "
            f"{res.identical}, differs from rgb: {res.differs_from_rgb} -> {'OK' if ok else 'FAILED'}"
        )
        for p in res.screenshots:
            CONSOLE.print(f"wrote {p}")
        if not ok:
            sys.exit(1)

    def main_n3f(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        res = run_n3f_check(self.load_config, self.out, self.click, self.port)
        captions = [
            ("n3f_feature_pca.png", "feature_pca (stable PCA colours)"),
            ("n3f_similarity.png", "similarity to the clicked query"),
            ("n3f_segment.png", "segment (within tau) over rgb"),
            ("n3f_remove.png", "Edit: remove"),
            ("n3f_extract.png", "Edit: extract"),
            ("n3f_segment_3d.png", "Show 3D segment (surface points)"),
        ]
        res.screenshots.append(overview(self.out, [c for c in captions if (self.out / c[0]).is_file()]))
        ok = res.identical and res.query_set and res.edits_differ and res.feature_pca_std > 2.0
        CONSOLE.print(
            f"n3f viewer: feature_pca std {res.feature_pca_std:.1f}, two renders identical: {res.identical}, "
            f"query set by the click: {res.query_set}, edits change the render: {res.edits_differ} -> "
            + ("OK" if ok else "FAILED")
        )
        for p in res.screenshots:
            CONSOLE.print(f"wrote {p}")
        if not ok:
            sys.exit(1)


def _method(config: Path) -> str:
    import yaml

    if not config.is_file():
        raise ViewerShotsError(f"{config}: no such config; pass the config.yml of an ns-train run")
    return str(getattr(yaml.load(config.read_text(), Loader=yaml.Loader), "method_name", ""))


def entrypoint() -> None:

    run_command(ViewerShots, (ViewerShotsError,))


if __name__ == "__main__":
    entrypoint()
