"""The documentation: the site builds strictly, every ``headlab …`` command in the README and the docs parses
against the real command line, the README stays short, and no private planning file is named."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: fenced blocks whose lines are shell commands (an unlabelled fence counts: its ``headlab`` lines are commands)
SHELL_LANGS = {"bash", "console", "sh", "shell", "shell-session", "zsh", ""}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<", "<<"}
PLACEHOLDERS = {"...", "…"}


def doc_files() -> list[Path]:
    docs = [p for p in sorted((REPO / "docs").rglob("*.md")) if "_hooks" not in p.parts]
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *docs]


def shell_lines(text: str):
    """(line number, command text) of every line in a shell fence, continuation lines joined."""
    fence = None
    lang = ""
    pending: tuple[int, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence, lang = m.group("fence"), m.group("lang").lower()
            continue
        if m and m.group("fence").startswith(fence) and not m.group("lang"):
            fence, pending = None, None
            continue
        if lang not in SHELL_LANGS:
            continue
        body = line.strip()
        if pending is not None:
            start, acc = pending
            body = acc + " " + body
        else:
            start = n
        if body.endswith("\\"):
            pending = (start, body[:-1])
            continue
        pending = None
        yield start, body


def headlab_args(line: str) -> list[str] | None:
    """The arguments after ``headlab`` on a command line, with doc placeholders normalised; None when the
    line does not run headlab. ``$ `` prompts and ``VAR=value`` prefixes are dropped; ``# = headlab …``
    comments (the command a ``headlab reproduce`` line stands for) count as commands."""
    text = line.strip()
    if text.startswith("$ "):
        text = text[2:]
    m = re.match(r"^#\s*=\s*(headlab\s.*)$", text)
    if m:
        text = m.group(1)
    try:
        tokens = shlex.split(text, comments=True, posix=False)  # quotes kept: a quoted "|" is a value, not a pipe
    except ValueError:
        return None
    while tokens and ENV.match(tokens[0]):
        tokens = tokens[1:]
    if not tokens or tokens[0] != "headlab":
        return None
    out = []
    for tok in tokens[1:]:
        if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "'\"":
            out.append(tok[1:-1])
            continue
        if tok in STOP:
            break
        if tok in PLACEHOLDERS:
            continue
        tok = tok.lstrip("[").rstrip("]")  # optional parts written [--opt VALUE]
        if "|" in tok and not tok.startswith("{"):  # alternatives a|b|c: the first stands for all
            tok = tok.split("|")[0]
        if tok:
            out.append(tok)
    return out


def all_commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for f in doc_files():
        for n, line in shell_lines(f.read_text(encoding="utf-8")):
            args = headlab_args(line)
            if args is not None:
                found.append((f"{f.relative_to(REPO)}:{n}", n, args))
    return found


def _exceptions():
    """The click exception classes of the command objects (typer vendors click from 0.20 on)."""
    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            mods.append(__import__(name, fromlist=["UsageError"]))
    pick = lambda attr: tuple(getattr(m, attr) for m in mods if hasattr(m, attr))  # noqa: E731
    return pick("NoSuchOption") + pick("BadOptionUsage"), pick("BadParameter"), pick("UsageError")


def check_command(args: list[str]) -> str | None:
    """None when ``headlab ARGS`` names real commands and real options; else what is wrong.

    Each level is parsed with ``make_context(..., resilient_parsing=False)``, which never runs a command.
    A value a placeholder stands for (``--trials N``) or a required option left out of an example is no
    error; an unknown option, an option without its value, an unknown command or an extra argument is."""
    import typer

    from headlab.cli import app

    bad_option, bad_value, usage = _exceptions()
    cmd = typer.main.get_command(app)
    name, parent, rest = "headlab", None, list(args)
    while True:
        try:
            ctx = cmd.make_context(name, list(rest), parent=parent, resilient_parsing=False)
        except bad_option as exc:
            return f"{' '.join([name, *rest])}: {exc.format_message()}"
        except bad_value:
            ctx = cmd.make_context(name, list(rest), parent=parent, resilient_parsing=True)
            if not hasattr(cmd, "list_commands") and ctx.args and not ctx.allow_extra_args:
                return f"{name}: unexpected extra argument(s) {ctx.args}"
        except typer.Exit:
            return None
        except usage as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                return None
            return f"{name}: {exc.format_message()}"
        if not hasattr(cmd, "list_commands"):
            return None
        protected = getattr(ctx, "_protected_args", None)
        if protected is None:
            protected = getattr(ctx, "protected_args", [])
        remaining = [*protected, *ctx.args]
        if not remaining:
            return None
        try:
            sub_name, sub, rest = cmd.resolve_command(ctx, remaining)
        except usage as exc:
            return f"{name}: {exc.format_message()}"
        if sub is None:
            return f"{name}: no such command {remaining[0]!r}"
        name, parent, cmd = sub_name, ctx, sub


# ---------------------------------------------------------------- tests
def test_the_command_checker_catches_renamed_options_and_commands():
    assert check_command(["scan", "--html", "--out", "DIR"]) is None
    assert check_command(["scan", "--max-tokens", "N"]) is None  # a placeholder value is fine
    assert check_command(["sparsify", "eval", "--lengths", "2048", "4096", "--trials", "20"]) is None
    assert "--no-such-option" in (check_command(["scan", "--no-such-option"]) or "")
    assert check_command(["sparsify", "nonexistent"]) is not None
    assert check_command(["scan", "--out"]) is not None  # an option without its value
    args = headlab_args("OMP_WAIT_POLICY=PASSIVE headlab lab sinks|induction [--out DIR] [--seed N] ...  # comment")
    assert args == ["lab", "sinks", "--out", "DIR", "--seed", "N"]
    assert headlab_args("# = headlab steer act --task sst2") == ["steer", "act", "--task", "sst2"]
    assert headlab_args("python scripts/x.py") is None
    assert headlab_args("headlab steer ablate --sep ';' --prefix '<|endoftext|>' | jq") == [
        "steer",
        "ablate",
        "--sep",
        ";",
        "--prefix",
        "<|endoftext|>",
    ]


def test_the_docs_show_commands():
    cmds = all_commands()
    assert len(cmds) > 50, "the command scanner found too few headlab lines in the docs"
    assert any(where.startswith("README.md:") for where, _, _ in cmds)


@pytest.mark.parametrize("where,line,args", all_commands(), ids=[w for w, _, _ in all_commands()])
def test_every_documented_command_parses(where, line, args):
    if args[:1] == ["reproduce"]:
        pytest.importorskip(
            "headlab_repro", reason="`headlab reproduce` comes with the repository's harness (pip install -e repro)"
        )
    problem = check_command(args)
    assert problem is None, f"{where}: `headlab {' '.join(args)}` does not parse against the CLI: {problem}"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; keep it <= 150 (details belong on the site)"


def test_readme_keeps_the_two_setup_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text


def test_no_private_planning_files_named():
    for f in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*"))]:
        if f.is_file() and f.suffix in {".md", ".py", ".yml", ".yaml"}:
            text = f.read_text(encoding="utf-8")
            assert not re.search(r"\bSPEC\b", text), f"{f.relative_to(REPO)} names SPEC"
            assert "DESIGN.md" not in text, f"{f.relative_to(REPO)} names DESIGN.md"


def test_the_cli_reference_is_generated_not_committed():
    assert not (REPO / "docs" / "reference" / "cli.md").exists(), "docs/reference/cli.md is generated at build time"
    sys.path.insert(0, str(REPO / "docs" / "_hooks"))
    try:
        import cli_reference
    finally:
        sys.path.remove(str(REPO / "docs" / "_hooks"))
    page = cli_reference.render()
    for cmd in ("headlab scan", "headlab steer", "headlab sparsify plan", "headlab sparsify eval", "headlab merge"):
        assert f"`{cmd}`" in page, cmd
    assert "--max-tokens" in page and "--kv-budget" in page and "--device-map" in page


def test_result_pages_are_render_targets():
    from headlab_repro.render import doc_files as render_targets

    targets = {p.relative_to(REPO).as_posix() for p in render_targets(REPO)}
    for page in ("docs/results/steering.md", "docs/results/sparsify.md", "docs/results/lab.md", "docs/results/benchmarks.md"):
        assert page in targets, page


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install 'headlab[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "getting-started/index.html", "reference/cli/index.html", "reference/api/index.html"):
        assert (site / page).is_file(), page
    assert "headlab sparsify plan" in (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")


def test_repository_paths_named_in_the_docs_exist():
    """A page that names a file (`src/headlab/...`, `tests/...`, `scripts/...`, `repro/...`) names one that exists,
    so a moved module or test shows up here."""
    missing = []
    for f in doc_files():
        generated = False  # a results block quotes the rule text recorded with the result: history, not a pointer
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("<!-- results:") or line.startswith("<!-- /results:"):
                generated = line.startswith("<!-- results:")
                continue
            if generated:
                continue
            for m in re.finditer(r"`((?:src|tests|scripts|repro)/[\w./-]+?)(?:::\w+)?`", line):
                path = m.group(1).rstrip("/.")
                if any(c in path for c in "*{}") or "NAME" in path:
                    continue
                if not (REPO / path).exists():
                    missing.append(f"{f.relative_to(REPO)}:{n}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)
