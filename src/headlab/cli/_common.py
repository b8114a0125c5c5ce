"""What every command shares: one option vocabulary, one error path, one place for notes and progress.

* options: ``--model`` (one help text), ``--out``, ``--json``, ``--quiet``, ``--threads`` (0 = torch's default),
  comma-separated lists (:func:`split_list`), hidden aliases for old spellings (:func:`alias`);
* errors: :class:`HeadlabGroup` (the class of every command group) turns a ValueError, RuntimeError (an
  out-of-memory included), OSError or a click usage error into one ``error: ...`` line on stderr and exit
  code 2; ``HEADLAB_DEBUG=1`` re-raises instead;
* output: results go to stdout; :func:`note` and every rich progress display go to stderr, and ``--quiet``
  silences both.

No torch here: ``headlab --help`` answers without it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

import typer
from typer.core import TyperGroup

T = TypeVar("T")

MODEL_HELP = "model: a built-in name (smollm2-135m, minilm), a local Hugging Face folder or a Hub id (owner/name)"
REPORT = Path("headlab-report")

#: exceptions that are bad input or a failed run, not a bug: one line on stderr, exit code 2
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError, ImportError, MemoryError)
#: click's exceptions (typer >= 0.2x vendors click: take them from typer, whichever click it runs on)
CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
USAGE_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
#: exits that are not failures (Exit and Abort subclass RuntimeError: never report them as errors)
EXITS: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort)

_STATE = {"quiet": False, "active": False}


# ------------------------------------------------------------------------------------------------ options
def model_option(default: Optional[str] = "smollm2-135m", help: str = MODEL_HELP) -> Any:
    return typer.Option(default, "--model", help=help)


def out_option(default: Optional[Path], help: str) -> Any:
    return typer.Option(default, "--out", help=help)


def json_option(help: str = "print the results as JSON on stdout (no tables)") -> Any:
    return typer.Option(False, "--json", help=help)


def _quiet(value: bool) -> bool:
    if value and _STATE["active"]:  # only inside a command (HeadlabGroup.invoke restores both afterwards)
        _STATE["quiet"] = True
        _global_console().quiet = True
    return value


def quiet_option(help: str = "no progress display and no notes on stderr (results still go to stdout)") -> Any:
    return typer.Option(False, "--quiet", "-q", help=help, callback=_quiet)


def _check_threads(value: Optional[int]) -> Optional[int]:
    if value is not None and value < 0:
        raise typer.BadParameter(f"--threads must be >= 0 (0 = torch's default), got {value}")
    return value


def threads_option(default: int = 0, hidden: bool = False) -> Any:
    return typer.Option(
        default, "--threads", help="torch CPU threads (0 = torch's default)", callback=_check_threads, hidden=hidden
    )


def alias(name: str) -> Any:
    """A hidden option (default None) for an old spelling, e.g. ``save = alias("--save")``; :func:`pick` merges."""
    return typer.Option(None, name, hidden=True)


def pick(new: T, old: Optional[T]) -> T:
    """The option's value: given under its old hidden spelling (``old`` is not None), else under its name."""
    return new if old is None else old


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` unless 0 (torch's default)."""
    _check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)


def split_list(values: Iterable[str] | str | None, name: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """The one list syntax: ``2048,8192``; the same given repeatedly (``-l 2048 -l 8192``) is accepted too.
    Each item is cast; a bad one is an error naming ``name`` and the value."""
    if values is None:
        return []
    out: list[Any] = []
    for item in [values] if isinstance(values, str) else values:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            try:
                out.append(cast(part))
            except ValueError:
                kind = {"int": "integers", "float": "numbers"}.get(getattr(cast, "__name__", ""), "values")
                raise typer.BadParameter(f"{name} {item!r}: give comma-separated {kind}, e.g. 2048,8192") from None
    return out


def check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")


def check_out_file(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give a file name like result.json")


# ------------------------------------------------------------------------------------------------ output
def note(message: str) -> None:
    """A "wrote ..." note or a hint: stderr, silenced by ``--quiet``."""
    if not _STATE["quiet"]:
        typer.echo(message, err=True)


def _global_console():
    import rich

    return rich.get_console()


@contextlib.contextmanager
def _command_output():
    """While a command runs: rich's global console (every progress bar or status without its own console) on
    stderr; ``--quiet`` (the option's callback) makes it quiet. Restored afterwards."""
    import rich
    from rich.console import Console

    saved, state = rich._console, dict(_STATE)  # the console every Progress() / status() without one uses
    rich._console = Console(stderr=True)
    _STATE.update(quiet=False, active=True)
    try:
        yield
    finally:
        rich._console = saved
        _STATE.update(state)


# ------------------------------------------------------------------------------------------------ errors
def debug() -> bool:
    return os.environ.get("HEADLAB_DEBUG", "") not in ("", "0")


def message(exc: BaseException) -> str:
    """One line for a failure, with a hint for an out-of-memory."""
    if isinstance(exc, typer.BadParameter) and ((exc.param is None and exc.param_hint is None) or exc.message.startswith("--")):
        text = exc.message  # it names the option itself: no "Invalid value for '--threads':" before it
    elif isinstance(exc, CLICK_ERROR):
        text = exc.format_message()  # type: ignore[attr-defined]
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    low = text.lower()
    if isinstance(exc, (RuntimeError, MemoryError)) and ("out of memory" in low or "can't allocate memory" in low):
        text = (
            f"out of memory: {text[:300]}{' …' if len(text) > 300 else ''}; try a smaller --batch-size or length, "
            "--dtype bfloat16, --device-map auto, or --device cpu"
        )
    elif isinstance(exc, ImportError) and getattr(exc, "name", None):
        text = f"{text} (an optional dependency is missing: `headlab doctor` names the install command)"
    return text


def print_error(text: str) -> None:
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {text}", err=True)


PANELS = ("Analyse", "Intervene", "Research", "Setup")


def _plain_help(cmd: Any) -> None:
    """Help text is plain text: escape what rich would read as markup (``pip install 'headlab[ray]'``), and give
    the command list a one-line summary (typer keeps the first paragraph's line breaks there)."""
    from rich.markup import escape

    if getattr(cmd, "_plain_help", False):
        return
    cmd._plain_help = True  # type: ignore[attr-defined]
    if cmd.help:
        cmd.help = escape(cmd.help)
        if cmd.short_help is None:
            first = inspect.cleandoc(cmd.help).partition("\f")[0].split("\n\n")[0]
            cmd.short_help = " ".join(first.split())
    for p in cmd.params:
        if getattr(p, "help", None):
            p.help = escape(p.help)  # type: ignore[attr-defined]


def _show_help(exc: Exception) -> None:
    """A group given alone: its help on stdout. Typer's rich help printed itself when the error was made
    (``ctx.get_help()`` renders); plain click help is the error's message."""
    text = exc.format_message()  # type: ignore[attr-defined]
    if text.strip():
        typer.echo(text)


class HeadlabGroup(TyperGroup):
    """The class of every headlab command group: commands listed by help panel (Analyse, Intervene, Research,
    Setup), then in the order they were added; a group given alone prints its help (exit 0); every failure
    below it becomes one ``error:`` line on stderr, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cmd in (self, *self.commands.values()):
            _plain_help(cmd)

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)

        def panel(name: str) -> int:
            p = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(p) if p in PANELS else len(PANELS)

        return sorted(names, key=lambda n: (panel(n), names.index(n)))

    def invoke(self, ctx: Any) -> Any:
        if ctx.parent is not None:  # an inner group: the outermost one handles everything
            return super().invoke(ctx)
        with _command_output():
            try:
                return super().invoke(ctx)
            except EXITS:
                raise
            except CLICK_ERROR as exc:
                if type(exc).__name__ == "NoArgsIsHelpError":  # `headlab steer` alone: its help, exit 0
                    _show_help(exc)
                    raise typer.Exit(0) from None
                if debug():
                    raise
                print_error(message(exc))
                raise typer.Exit(getattr(exc, "exit_code", 2)) from None
            except USER_ERRORS as exc:
                if debug():
                    raise
                print_error(message(exc))
                raise typer.Exit(2) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra) -> Any:  # type: ignore[override]
        if not standalone_mode:  # a caller that handles errors itself (the claims harness)
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Exit as exc:  # pragma: no cover - typer returns the code of an Exit
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except CLICK_ERROR as exc:  # the root's own arguments (`headlab --bogus`, `headlab` alone)
            if type(exc).__name__ == "NoArgsIsHelpError":
                _show_help(exc)
                sys.exit(0)
            print_error(message(exc))
            sys.exit(getattr(exc, "exit_code", 2))
        except USER_ERRORS as exc:  # pragma: no cover - invoke() handles these
            if debug():
                raise
            print_error(message(exc))
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def typer_app(help: str, **kw: Any) -> typer.Typer:
    """A command group with headlab's habits (see :class:`HeadlabGroup`)."""
    kw.setdefault("cls", HeadlabGroup)
    kw.setdefault("no_args_is_help", True)
    return typer.Typer(help=help, pretty_exceptions_enable=False, **kw)
