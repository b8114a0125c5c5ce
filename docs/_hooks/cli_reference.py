"""mkdocs hook: the command-line reference page, generated from the typer app at build time.

The page ``reference/cli.md`` is never a file in the repository: every build walks
``typer.main.get_command(headlab.cli.app)`` (commands, groups, their help, arguments and options with
their defaults and help panels), so the reference follows every change of the command line. Commands
that installed plug-ins add through the ``headlab.commands`` entry points (the repository's
``headlab reproduce``) appear when the plug-in is installed.

Only the public parts of click's command objects are read (``params``, ``opts``, ``help``,
``list_commands``, ``collect_usage_pieces``), so this works with click and with typer's vendored copy.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

PAGE = "reference/cli.md"
log = logging.getLogger("mkdocs.hooks.cli_reference")

INTRO = """# Command-line reference

Generated from the command line itself (`headlab.cli.app`) every time the site is built, so it
cannot go stale. `headlab COMMAND --help` prints the same in the terminal.
Commands that load a model take `--model` (an embedded name, a local folder or a Hub id); those that
run it on real data also take `--device` and `--dtype`, most of them `--device-map`
([run on a GPU](../how-to/gpu.md)). Errors go to stderr with exit code 2.
"""


def _unwrap(value: Any) -> Any:
    """typer wraps unset settings in ``DefaultPlaceholder``; its ``value`` is the real default."""
    return getattr(value, "value", value) if type(value).__name__ == "DefaultPlaceholder" else value


def _text(s: str | None) -> str:
    """Help text as markdown text: no HTML, no table breaks, no accidental emphasis; `code` stays code."""
    if not s:
        return ""
    parts = re.split(r"(`[^`]*`)", s)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) > 1:
            out.append(p)
        else:
            out.append(html.escape(p, quote=False).replace("*", r"\*").replace("_", r"\_"))
    return "".join(out)


def _cell(s: str | None) -> str:
    return " ".join(_text(s).split()).replace("|", r"\|")


def _code(s: object) -> str:
    """Inline code that survives a table cell: HTML, with the pipe as an entity (a table would split on it)."""
    return "<code>" + html.escape(str(s), quote=False).replace("|", "&#124;") + "</code>"


def _paragraphs(help_text: str | None) -> str:
    """The command's docstring: paragraphs separated by blank lines, typer's \\b markers dropped."""
    if not help_text:
        return ""
    text = help_text.replace("\b", "")
    paras = [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(_text(p) for p in paras if p) + "\n"


def _type(p: Any, ctx: Any) -> str:
    t = getattr(p, "type", None)
    if t is not None:  # click
        return str(getattr(t, "name", t))
    f = getattr(p, "display_type", None)  # typer's vendored click
    try:
        return str(f(ctx)).strip("<>") if callable(f) else ""
    except Exception:  # noqa: BLE001 - a display detail must not break the build
        return ""


def _default(p: Any) -> str:
    if getattr(p, "required", False):
        return "required"
    if getattr(p, "show_default", True) is False:
        return ""
    d = _unwrap(getattr(p, "default", None))
    if callable(d) or d is None or d == () or d == []:
        return ""
    if getattr(p, "is_flag", False) and d is False:
        return ""
    if isinstance(d, (list, tuple)):
        return ", ".join(_code(x) for x in d)
    return _code(d)


def _names(p: Any) -> str:
    opts = list(getattr(p, "opts", []))
    sec = list(getattr(p, "secondary_opts", []))
    s = ", ".join(_code(o) for o in opts)
    if sec:
        s += " / " + ", ".join(_code(o) for o in sec)
    return s


def _params_md(cmd: Any, ctx: Any) -> str:
    params = [p for p in getattr(cmd, "params", []) if not getattr(p, "hidden", False)]
    args = [p for p in params if getattr(p, "param_type_name", "") == "argument"]
    opts = [p for p in params if getattr(p, "param_type_name", "") == "option"]
    out = []
    if args:
        out += ["**Arguments**", "", "| argument | type | | description |", "|---|---|---|---|"]
        for p in args:
            name = (getattr(p, "metavar", None) or p.name or "").upper()
            req = "required" if getattr(p, "required", False) else "optional"
            out.append(f"| {_code(name)} | {_cell(_type(p, ctx))} | {req} | {_cell(getattr(p, 'help', None))} |")
        out.append("")
    panels: dict[str, list[Any]] = {}
    for p in opts:
        panels.setdefault(_unwrap(getattr(p, "rich_help_panel", None)) or "Options", []).append(p)
    for panel, ps in panels.items():
        out += [f"**{_text(panel)}**", "", "| option | type | default | description |", "|---|---|---|---|"]
        for p in ps:
            typ = "flag" if getattr(p, "is_flag", False) else _type(p, ctx)
            if getattr(p, "multiple", False):
                typ += ", repeatable"
            out.append(f"| {_names(p)} | {_cell(typ)} | {_default(p)} | {_cell(getattr(p, 'help', None))} |")
        out.append("")
    return "\n".join(out)


def _subcommands(cmd: Any, ctx: Any) -> list[tuple[str, Any]]:
    if not hasattr(cmd, "list_commands"):
        return []
    found = []
    for name in cmd.list_commands(ctx):
        sub = cmd.get_command(ctx, name)
        if sub is not None and not getattr(sub, "hidden", False):
            found.append((name, sub))
    return found


def _slug(path: list[str]) -> str:
    return "-".join(path)


def _summary(cmd: Any) -> str:
    short = getattr(cmd, "short_help", None)
    if short:
        return short
    text = (getattr(cmd, "help", None) or "").replace("\b", "").strip()
    first = re.split(r"\n\s*\n", text)[0] if text else ""
    return " ".join(first.split())


def _command_md(cmd: Any, ctx: Any, path: list[str], level: int) -> list[str]:
    usage = " ".join([ctx.command_path, *cmd.collect_usage_pieces(ctx)])
    out = [f"{'#' * min(level, 6)} `{' '.join(path)}` {{ #{_slug(path)} }}", ""]
    out += [_paragraphs(getattr(cmd, "help", None)), "```text", usage, "```", ""]
    subs = _subcommands(cmd, ctx)
    if subs:
        out += ["| command | what it does |", "|---|---|"]
        for name, sub in subs:
            out.append(f"| [`{name}`](#{_slug([*path, name])}) | {_cell(_summary(sub))} |")
        out.append("")
    params = _params_md(cmd, ctx)
    if params:
        out.append(params)
    for name, sub in subs:
        sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
        out += _command_md(sub, sub_ctx, [*path, name], level + 1)
    return out


def render() -> str:
    """The whole page: the top-level commands by help panel, then every command in full."""
    import typer.main

    from headlab.cli import app

    root = typer.main.get_command(app)
    ctx_cls = None
    for mod in ("typer._click.core", "click.core"):  # the Context class that belongs to these commands
        try:
            m = __import__(mod, fromlist=["Context", "Command"])
        except ImportError:
            continue
        if isinstance(root, m.Command):
            ctx_cls = m.Context
            break
    if ctx_cls is None:
        raise RuntimeError("cannot find the click Context class of the headlab command line")
    ctx = ctx_cls(root, info_name="headlab")
    lines = [INTRO]
    panels: dict[str, list[tuple[str, Any]]] = {}
    for name, sub in _subcommands(root, ctx):
        panels.setdefault(_unwrap(getattr(sub, "rich_help_panel", None)) or "Commands", []).append((name, sub))
    for panel, subs in panels.items():
        lines += [f"**{_text(panel)}**", "", "| command | what it does |", "|---|---|"]
        lines += [f"| [`headlab {n}`](#headlab-{n}) | {_cell(_summary(s))} |" for n, s in subs]
        lines.append("")
    lines.append("## `headlab` { #headlab }\n")
    lines += [_paragraphs(root.help), _params_md(root, ctx)]
    for name, sub in _subcommands(root, ctx):
        lines += _command_md(sub, ctx_cls(sub, info_name=name, parent=ctx), ["headlab", name], 2)
    return "\n".join(lines).rstrip() + "\n"


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    old = files.get_file_from_path(PAGE)
    if old is not None:  # never a committed copy: a warning (an error under --strict), and the generated page wins
        log.warning("docs/%s is generated at build time by docs/_hooks/cli_reference.py; delete the file", PAGE)
        files.remove(old)
    files.append(File.generated(config, PAGE, content=render()))
    return files
