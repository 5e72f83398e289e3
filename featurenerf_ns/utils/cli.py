"""Shared plumbing of the featurenerf-* command-line tools."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Tuple, Type

import tyro
from rich.console import Console


def make_console(**kwargs) -> Console:
    """A rich console that keeps tables whole in log files: rich draws 80 columns when stdout is not a terminal,
    which cut the main job's tables; then it draws 200 (a terminal keeps its own width)."""
    if not sys.stdout.isatty():
        kwargs.setdefault("width", 200)
    return Console(**kwargs)


CONSOLE = make_console()


def run_subcommands(
    commands: Dict[str, Callable[..., Any]], description: str, errors: Tuple[Type[BaseException], ...]
) -> None:
    """Parses ``commands`` (name -> dataclass with ``main()``) with tyro and runs the chosen one; the given
    error types are user-input problems: printed as one line, exit code 2, no traceback."""
    cmd = tyro.extras.subcommand_cli_from_dict(commands, description=description)
    try:
        cmd.main()
    except errors as e:
        CONSOLE.print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(2)


def run_command(command: type, errors: Tuple[Type[BaseException], ...]) -> None:
    """Like :func:`run_subcommands` for a tool with one command (a dataclass with ``main()``)."""
    cmd: Any = tyro.cli(command)
    try:
        cmd.main()
    except errors as e:
        CONSOLE.print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(2)
