"""One-line errors for this plugin's input errors under nerfstudio's own CLIs (ns-train, ns-eval, ns-viewer, ...).

Our ``featurenerf-*`` tools catch their error types and print one line (``utils/cli.py``); nerfstudio's CLIs do not
catch anything, so a missing data folder or teacher cache ended ``ns-train`` in a 40-line traceback whose last line
was the message. Installed when the package is imported by an ``ns-*`` program: an exception whose class is defined
in ``featurenerf_ns`` (every such class is an input error: data, teacher, weights, encoder, export, ...) prints
``error: <message>`` on stderr instead of the traceback (the exit status stays Python's 1, and the interpreter shuts
down as usual, flushing loggers); any other exception keeps Python's traceback, and
``FEATURENERF_TRACEBACK=1`` keeps it for ours too. Kept free of heavy imports: the package's ``__init__`` loads it.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Optional, Type


def is_input_error(exc: BaseException) -> bool:
    """True for the plugin's own error classes (and their subclasses)."""
    return any(getattr(k, "__module__", "").startswith("featurenerf_ns.") for k in type(exc).__mro__[:-1])


def _hook(previous):
    def hook(kind: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        if is_input_error(exc) and not os.environ.get("FEATURENERF_TRACEBACK"):
            sys.stderr.write(f"error: {exc}\n")
            return
        previous(kind, exc, tb)

    hook.featurenerf_error_hook = True
    return hook


def install_for_nerfstudio_cli(argv0: Optional[str] = None) -> bool:
    """Installs the hook when the running program is one of nerfstudio's ``ns-*`` commands (once); returns whether
    it is installed."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if not name.startswith("ns-"):
        return False
    if not getattr(sys.excepthook, "featurenerf_error_hook", False):
        sys.excepthook = _hook(sys.excepthook)
    return True
