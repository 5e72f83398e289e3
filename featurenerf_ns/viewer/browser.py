"""A real browser on ``ns-viewer``: start the viewer headless on a checkpoint, drive it from Debian's Chromium
through Playwright (no browser download) and read back the frames it streams. Used by
``featurenerf-viewer-shots`` and the viewer tests; needs ``pip install playwright`` and ``apt-get install chromium``.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

CHROMIUM = Path(os.environ.get("FEATURENERF_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]


class ViewerShotsError(RuntimeError):
    """Something the browser check needs is missing or misbehaved; one line naming it and the fix."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_browser() -> None:
    """Raise a one-line error when Playwright or Chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise ViewerShotsError(
            "playwright is not installed; `pip install playwright` (the browser is Debian's chromium)"
        ) from None
    if not CHROMIUM.is_file():
        raise ViewerShotsError(f"{CHROMIUM} not found; `apt-get install chromium` (or set FEATURENERF_CHROMIUM)")


class ViewerProcess:
    """``ns-viewer`` in its own process group (stopping it also stops its data-loader workers)."""

    def __init__(self, config: Path, port: int, log: Path, timeout: float = 300.0):
        self.config, self.port, self.log, self.timeout = config, port, log, timeout
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ViewerProcess":
        exe = Path(sys.executable).parent / "ns-viewer"
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [str(exe), "--load-config", str(self.config), "--viewer.websocket-port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1"),
        )
        t0 = time.time()
        while time.time() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise ViewerShotsError(
                    f"ns-viewer exited with {self.proc.returncode}; see {self.log}: "
                    + self.log.read_text()[-400:].replace("\n", " | ")
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.5)
        self.__exit__()
        raise ViewerShotsError(
            f"ns-viewer did not listen on 127.0.0.1:{self.port} within {self.timeout:.0f} s; see {self.log}"
        )

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@dataclass
class Frame:
    time: float
    image: np.ndarray  # (H, W, 3) uint8, as the browser received it


class BrowserClient:
    """Headless Chromium on the viewer page; records every background image the viewer streams to it."""

    def __init__(self, url: str, size: Tuple[int, int] = (1280, 800)):
        self.url, self.size = url, size
        self.frames: List[Frame] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "BrowserClient":
        from playwright.sync_api import sync_playwright

        check_browser()
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": self.size[0], "height": self.size[1]})
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._on_frame))
        self.page.goto(self.url)
        return self

    def __exit__(self, *exc) -> None:
        self.browser.close()
        self._pw.stop()

    def _on_frame(self, payload) -> None:
        import msgspec
        from PIL import Image

        if not isinstance(payload, (bytes, bytearray)):
            return
        try:
            messages = msgspec.msgpack.decode(payload)
        except Exception:
            return
        for m in messages if isinstance(messages, (list, tuple)) else [messages]:
            if isinstance(m, dict) and m.get("type") == "BackgroundImageMessage":
                img = np.asarray(Image.open(io.BytesIO(m["rgb_bytes"])).convert("RGB"))
                with self._lock:
                    self.frames.append(Frame(time.time(), img))

    def wait_settled(
        self, after: float, min_pixels: int = 64 * 64, quiet: float = 3.0, timeout: float = 300.0
    ) -> Frame:
        """The last frame received after time ``after`` once it is a full-resolution one (at least ``min_pixels``;
        while the view changes the viewer first streams ~30 px previews) and no new frame came for ``quiet`` s."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            self.page.wait_for_timeout(500)  # (Playwright delivers websocket events only while it is called)
            with self._lock:
                recent = [f for f in self.frames if f.time > after]
            if (
                recent
                and time.time() - recent[-1].time > quiet
                and recent[-1].image.shape[0] * recent[-1].image.shape[1] >= min_pixels
            ):
                return recent[-1]
        raise ViewerShotsError(
            f"the viewer sent no settled image within {timeout:.0f} s (got "
            f"{len([f for f in self.frames if f.time > after])} frames)"
        )

    def select(self, label: str, option: str) -> float:
        """Choose ``option`` in the dropdown labelled ``label``; returns the time just before."""
        t = time.time()
        box = self.page.get_by_label(label, exact=True)
        box.scroll_into_view_if_needed()
        box.click()
        self.page.get_by_role("option", name=option, exact=True).click()
        return t

    def click_button(self, name: str) -> float:
        t = time.time()
        button = self.page.get_by_role("button", name=name, exact=True)
        button.scroll_into_view_if_needed()
        button.click()
        return t

    def click_canvas(self, x: float, y: float) -> float:
        """Click the 3D view at fractions (x, y) of the canvas."""
        t = time.time()
        canvases = self.page.locator("canvas")
        boxes = [
            b for b in (canvases.nth(i).bounding_box() for i in range(canvases.count())) if b and b["height"] > 100
        ]
        box = min(boxes, key=lambda b: b["width"])  # the 3D view (a wider one lies under the control panel)
        self.page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
        return t

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))


def non_constant(img: np.ndarray) -> bool:
    return float(img.astype(np.float32).std()) > 2.0 and len(np.unique(img.reshape(-1, 3), axis=0)) > 16
