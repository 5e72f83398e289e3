"""Dry runs of scripts/gpu_check.sh only (scripts/gpu/dry_run.sh puts this folder on PYTHONPATH): makes this machine
import like the device image. A top-level import whose distribution is neither in the image
(scripts/gpu/image_packages.txt) nor among the wheels that travel (scripts/gpu/wheels.txt) fails with
ModuleNotFoundError, importlib.util.find_spec answers None and importlib.metadata PackageNotFoundError, as they would
there; code that guards such imports goes on as it would there. Every refused import is appended to $FG_SIM_LOG (one
line: process, module, distribution) for the dry run's summary. Standard-library modules and modules of no known
distribution pass.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent


def _names(path: Path) -> set:
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(_norm(line.split("==", 1)[0]))
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _DeviceImageFinder:
    """A meta-path finder that refuses what the device would lack (it finds nothing itself)."""

    def __init__(self):
        self.allowed = _names(_HERE / "image_packages.txt") | _names(_HERE / "wheels.txt") | {"featurenerf-ns"}
        # $FG_SIM_ALLOW: distributions needed only by this machine's other versions of image packages
        self.allowed |= {_norm(d) for d in os.environ.get("FG_SIM_ALLOW", "").split()}
        self.log = os.environ.get("FG_SIM_LOG")
        self._p2d = None
        self.refused: set = set()

    def lacking(self, fullname: str) -> list:
        """The distributions of top-level module ``fullname`` when the device would lack all of them, else []."""
        if "." in fullname or fullname in sys.stdlib_module_names:
            return []
        if self._p2d is None:
            import importlib.metadata as md

            self._p2d = {}  # guards the recursion: packages_distributions imports modules itself
            self._p2d = md.packages_distributions()
        dists = [_norm(d) for d in self._p2d.get(fullname, [])]
        if not dists or any(d in self.allowed for d in dists):
            return []
        if fullname not in self.refused:
            self.refused.add(fullname)
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"{os.getpid()} {Path(sys.argv[0]).name or 'python'}: {fullname} ({', '.join(dists)})\n")
        return dists

    def find_spec(self, fullname, path=None, target=None):
        dists = self.lacking(fullname)
        if dists:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (device-image dry run: {', '.join(dists)} is neither in the image nor "
                "in scripts/gpu/wheels.txt)",
                name=fullname,
            )
        return None


_FINDER = _DeviceImageFinder()
sys.meta_path.insert(0, _FINDER)
_real_find_spec = importlib.util.find_spec


def _find_spec(name, package=None):
    """importlib.util.find_spec answers None for a module the device lacks (as there), instead of raising."""
    if not name.startswith(".") and _FINDER.lacking(name.split(".", 1)[0]):
        return None
    return _real_find_spec(name, package)


importlib.util.find_spec = _find_spec
_real_from_name = importlib.metadata.Distribution.from_name.__func__


def _from_name(cls, name):
    """importlib.metadata answers PackageNotFoundError for a distribution the device lacks (as there): code that
    checks a requirement by its metadata (lightning_utilities' RequirementCache) then skips it, as it would there."""
    if _norm(name) not in _FINDER.allowed:
        raise importlib.metadata.PackageNotFoundError(name)
    return _real_from_name(cls, name)


importlib.metadata.Distribution.from_name = classmethod(_from_name)
