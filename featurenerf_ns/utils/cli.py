"""Shared plumbing of the featurenerf-* command-line tools."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Literal, Optional, Tuple, Type

import tyro
from nerfstudio.utils.rich_utils import CONSOLE as NS_CONSOLE
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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


def rate_progress(console: Console) -> Progress:
    """A rich progress display with a bar, n/total, a ``rate`` field (``add_task(..., rate="")``), elapsed and
    remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class progress_bar:
    """``with progress_bar(enabled, description, total) as advance:`` a rich progress bar on nerfstudio's console
    (or nothing when not enabled); ``advance()`` moves it one step."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self.bar: Optional[Progress] = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        bar = self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=NS_CONSOLE,
            transient=False,
        )
        bar.__enter__()
        task = bar.add_task(self.description, total=self.total)
        return lambda: bar.advance(task)

    def __exit__(self, *exc) -> "Literal[False]":
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
