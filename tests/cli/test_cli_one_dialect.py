"""One CLI: help groups, a group alone prints its help, every command fails on a bad value with one `error:`
line on stderr and exit code 2 (no traceback), results on stdout and notes on stderr, and the older spellings
of the registered command lines still parse."""

from __future__ import annotations

import json
import shlex

import pytest
import typer
from typer.testing import CliRunner

from headlab.cli import _common as C
from headlab.cli import app

ROOT = typer.main.get_command(app)
PANELS = {
    "Analyse": {"scan", "report", "contrast", "circuits", "merge"},
    "Intervene": {"steer", "sparsify"},
    "Research": {"lab", "bench", "reproduce"},
    "Setup": {"doctor", "cache"},
}


def _invoke(args, **kw):
    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def _leaves(cmd=ROOT, path=()):
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


# ------------------------------------------------------------------------------------------------ help
def test_help_groups_and_their_order():
    got: dict[str, set[str]] = {}
    for name, cmd in ROOT.commands.items():  # type: ignore[attr-defined]
        got.setdefault(cmd.rich_help_panel, set()).add(name)
    want = {k: v for k, v in PANELS.items()}
    if "reproduce" not in ROOT.commands:  # type: ignore[attr-defined]  # the harness adds it (an entry point)
        want["Research"] = want["Research"] - {"reproduce"}
    assert got == want
    r = _invoke(["--help"])
    assert r.exit_code == 0
    at = [r.stdout.index(f"─ {p} ") for p in PANELS]
    assert at == sorted(at), "panels in the order Analyse, Intervene, Research, Setup"


@pytest.mark.parametrize("group", sorted(n for n, c in ROOT.commands.items() if hasattr(c, "commands")))  # type: ignore[attr-defined]
def test_a_group_alone_prints_its_help(group):
    r = _invoke([group])
    assert r.exit_code == 0, r.output
    assert f" {group} [OPTIONS] COMMAND" in r.stdout and r.stderr == ""


def test_help_text_is_not_eaten_by_markup():
    r = _invoke(["scan", "--help"])
    assert r.exit_code == 0 and "headlab[ray]" in r.stdout


def test_lab_help_names_every_experiment():
    lab = ROOT.commands["lab"]  # type: ignore[attr-defined]
    assert set(lab.commands) == {
        "sinks", "induction", "icl-regression", "memory-capacity", "moh", "deconstruct", "rf-mean",
        "pointer-hull", "probing-sst2", "pooling-sst2", "ponet-lra", "dsf-equiv", "refam-squad",
        "carve-squad", "preplan-anchor", "dominance-squad", "exit-squad",
    }  # fmt: skip
    assert all(f"({name})" in lab.help for name in lab.commands), lab.help


def test_help_answers_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from headlab.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0 and 'torch' not in sys.modules, r.output\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ------------------------------------------------------------------------------------------------ the vocabulary
def _options(path):
    cmd = ROOT
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {o: p for p in cmd.params for o in getattr(p, "opts", [])}, cmd


MODEL_LOADERS = {
    ("scan",),
    ("contrast",),
    ("report",),
    ("sparsify", "eval"),
    ("sparsify", "plan"),
    ("bench", "capture"),
    ("bench", "plan"),
    ("circuits", "ioi"),
    ("circuits", "colored-objects"),
    ("circuits", "importance"),
    ("circuits", "attribution"),
    ("steer", "guide"),
    ("steer", "headhunt"),
    *(("steer", m) for m in ("zerotuning", "act", "redistribute", "reinforce", "inject", "ablate", "apply")),
}


@pytest.mark.parametrize("path", sorted(MODEL_LOADERS), ids=" ".join)
def test_every_command_that_loads_a_model_takes_the_same_model_options(path):
    opts, _ = _options(path)
    assert {"--model", "--device", "--dtype", "--device-map", "--threads"} <= set(opts), sorted(opts)
    assert opts["--model"].help.startswith("model: a built-in name")


@pytest.mark.parametrize("path", [p for p in _leaves() if p[0] != "reproduce"], ids=" ".join)
def test_threads_mean_the_same_everywhere_and_results_can_be_json(path):
    opts, cmd = _options(path)
    if "--threads" in opts:
        assert opts["--threads"].default == 0, f"headlab {' '.join(path)}: --threads defaults to torch's own (0)"
    if "--out" in opts and opts["--out"].default is not None and str(opts["--out"].default):
        assert str(opts["--out"].default).startswith("headlab-report"), opts["--out"].default
    if path not in {("report",)}:  # report prints no results, only where it wrote the page
        assert "--json" in opts and "--quiet" in opts, f"headlab {' '.join(path)}"


# ------------------------------------------------------------------------------------------------ errors
MISSING_MODEL = "/nonexistent/headlab-model"

#: one bad value per command, and what its error line names; none loads a model (the one that gets as far as
#: loading names a local folder that does not exist)
BAD = {
    ("scan",): (["--n", "0"], "got 0"),
    ("contrast",): (["--task", "q", "--context", "x", "--top", "0"], "got 0"),
    ("report",): (["{tmp}/nope"], "nope"),
    ("merge",): (["{tmp}", "--out", "{file}"], "afile"),
    ("doctor",): (["extra"], "extra"),
    ("cache", "list"): (["extra"], "extra"),
    ("cache", "clear"): (["--model", "gpt-17"], "gpt-17"),
    ("steer", "zerotuning"): (["--tune-on", "0"], "got 0"),
    ("steer", "act"): (["--icl-shots", "-1"], "got -1"),
    ("steer", "redistribute"): (["--threads", "-1"], "got -1"),
    ("steer", "reinforce"): (["--model", MISSING_MODEL], MISSING_MODEL),
    ("steer", "inject"): (["--out", "{tmp}"], "is a folder"),
    ("steer", "emphasize"): (["--threads", "-2"], "got -2"),
    ("steer", "ablate"): (["--sites", "L0", "--threads", "-3"], "got -3"),
    ("steer", "apply"): (["--edits", "{tmp}/x.json", "--icl-shots", "-2"], "got -2"),
    ("steer", "guide"): (["hi", "--sites", "L0", "--max-new-tokens", "0"], "got 0"),
    ("steer", "headhunt"): (["--u-grid", "x"], "'x'"),
    ("sparsify", "eval"): (["--lengths", "100"], "got 100"),
    ("sparsify", "reach"): (["--length", "100"], "got 100"),
    ("sparsify", "plan"): (["--method", "nope"], "'nope'"),
    ("bench", "kernels"): (["--repeats", "0"], "got 0"),
    ("bench", "capture"): (["--repeats", "0"], "got 0"),
    ("bench", "lse"): (["--lengths", "1,x"], "'1,x'"),
    ("bench", "mechanisms"): (["--mechanisms", "nope"], "'nope'"),
    ("bench", "peers"): (["--repeats", "0"], "got 0"),
    ("bench", "neighborhood"): (["--repeats", "0"], "got 0"),
    ("bench", "kv"): (["--fractions", "1.5"], "'1.5'"),
    ("bench", "plan"): (["--plan", "{tmp}/nope.json", "--length", "0"], "got 0"),
    ("lab", "sinks"): (["--steps", "0"], "got 0"),
    ("lab", "induction"): (["--pairs", "0"], "got 0"),
    ("lab", "icl-regression"): (["--steps", "-1"], "got -1"),
    ("lab", "memory-capacity"): (["--n", "0"], "got 0"),
    ("lab", "moh"): (["--check-every", "0"], "got 0"),
    ("lab", "deconstruct"): (["--batch", "0"], "got 0"),
    ("lab", "rf-mean"): (["--threads", "-1"], "got -1"),
    ("lab", "dsf-equiv"): (["--trials", "0"], "got 0"),
    ("lab", "pointer-hull"): (["--steps", "0"], "got 0"),
    ("lab", "ponet-lra"): (["--steps", "-1"], "got -1"),
    ("lab", "pooling-sst2"): (["--steps", "0"], "got 0"),
    ("lab", "probing-sst2"): (["--folds", "1"], "got 1"),
    ("lab", "refam-squad"): (["--items", "0"], "got 0"),
    ("lab", "carve-squad"): (["--keep", "1.5"], "got 1.5"),
    ("lab", "preplan-anchor"): (["--prompts", "0"], "got 0"),
    ("lab", "dominance-squad"): (["--keep", "1.5"], "got 1.5"),
    ("lab", "exit-squad"): (["--folds", "1"], "got 1"),
    ("circuits", "ioi"): (["--n", "1"], "--n=1"),
    ("circuits", "colored-objects"): (["--batch-heads", "-1"], "=-1"),
    ("circuits", "reuse"): (["{tmp}", "{tmp}", "--out", "{tmp}"], "is a folder"),
    ("circuits", "importance"): (["--max-tokens", "1"], "got 8 and 1"),
    ("circuits", "attribution"): (["--task", "imdb"], "'imdb'"),
}


def test_every_command_has_a_bad_value_case():
    """A new command needs its line in BAD (plug-in commands, e.g. the harness's `reproduce`, are theirs)."""
    leaves = {p for p in _leaves() if p[0] != "reproduce"}
    assert leaves == set(BAD), f"missing: {sorted(leaves - set(BAD))}; stale: {sorted(set(BAD) - leaves)}"


@pytest.mark.parametrize("path", sorted(BAD), ids=" ".join)
def test_a_bad_value_is_one_error_line_and_exit_2(path, tmp_path):
    args, names = BAD[path]
    (tmp_path / "afile").write_text("x")
    fill = {"{tmp}": str(tmp_path), "{file}": str(tmp_path / "afile")}
    argv = [*path, *(fill.get(a, a.replace("{tmp}", str(tmp_path))) for a in args)]
    r = _invoke(argv)
    assert r.exit_code == 2, (argv, r.output)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, r.stderr)
    assert names in lines[0], (argv, lines[0])
    assert "Traceback" not in r.output and r.stdout == "", (argv, r.output)


def test_runtime_errors_and_out_of_memory_are_one_line(monkeypatch, tmp_path):
    from headlab.cli import _device

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB.\nGPU 0 has a total capacity of 79 GiB")

    monkeypatch.setattr(_device, "load_model", oom)
    r = _invoke(["contrast", "--task", "q", "--context", "x", "--out", tmp_path / "c"])
    assert r.exit_code == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0") and "--dtype" in line
    monkeypatch.setenv("HEADLAB_DEBUG", "1")  # the escape hatch: the exception itself
    r = _invoke(["contrast", "--task", "q", "--context", "x", "--out", tmp_path / "c"])
    assert isinstance(r.exception, RuntimeError) and "out of memory" in str(r.exception)


def test_usage_errors_are_one_line():
    for argv, word in ((["--bogus"], "--bogus"), (["scan", "--nope"], "--nope"), (["steer", "magic"], "'magic'")):
        r = _invoke(argv)
        assert r.exit_code == 2 and r.stdout == "", r.output
        (line,) = r.stderr.splitlines()
        assert line.startswith("error: ") and word in line


# ------------------------------------------------------------------------------------------------ output
def test_results_on_stdout_notes_on_stderr_quiet_silences_notes(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADLAB_CACHE", str(tmp_path / "cache"))
    r = _invoke(["cache", "list"])
    assert r.exit_code == 0 and "model cache" in r.stdout and "the cache is empty" in r.stderr
    r = _invoke(["cache", "list", "--quiet"])
    assert r.exit_code == 0 and "model cache" in r.stdout and r.stderr == ""
    r = _invoke(["cache", "list", "--json", "--quiet"])
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"] == [] and r.stderr == ""


def test_progress_without_a_console_goes_to_stderr_and_quiet_hides_it():
    """Library progress bars made without a console (rich's global one) land on stderr inside a command."""
    demo = C.typer_app("demo")

    @demo.command("run")
    def run(quiet: bool = C.quiet_option()) -> None:
        import rich
        from rich.progress import Progress

        with Progress(transient=False) as p:
            p.add_task("working", total=1, completed=1)
        rich.print("progress console:", "stderr" if rich.get_console().stderr else "stdout")
        typer.echo("result")

    @demo.command("other")
    def other() -> None:
        pass

    r = CliRunner().invoke(demo, ["run"])
    assert r.exit_code == 0 and r.stdout == "result\n" and "working" in r.stderr and "stderr" in r.stderr
    r = CliRunner().invoke(demo, ["run", "--quiet"])
    assert r.exit_code == 0 and r.stdout == "result\n" and r.stderr == ""


# ------------------------------------------------------------------------------------------------ old spellings
def _parse(argv: list[str]) -> None:
    """Parse ``headlab ARGV`` level by level like click does (callbacks run, no command does)."""
    cmd, name, parent, rest = ROOT, "headlab", None, argv
    while True:
        ctx = cmd.make_context(name, list(rest), parent=parent)
        if not hasattr(cmd, "commands"):
            return
        remaining = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, remaining)  # type: ignore[attr-defined]
        parent = ctx


def test_every_registered_command_line_still_parses(tmp_path):
    """The claims harness's registered commands are records of how results were made: the spellings they use
    (--save, --config, --trials, --items, --n-texts, --tokens, `--lengths 2048 4096`, `steer --config`, `lab
    --threads N EXPERIMENT`) stay accepted."""
    claims = pytest.importorskip("headlab_repro.claims")
    lines = [line for c in claims.all_claims().values() for line in (*c.command, *c.smoke)]
    assert len(lines) > 40
    for line in lines:
        argv = shlex.split(line.format(out=tmp_path / "out", results=tmp_path / "results"))
        assert argv[0] == "headlab"
        try:
            _parse(argv[1:])
        except Exception as exc:  # noqa: BLE001 - the message names the line
            raise AssertionError(f"{line}: {exc!r}") from exc


def test_old_spellings_reach_the_same_options():
    steer = ROOT.commands["steer"]  # type: ignore[attr-defined]
    ctx = steer.make_context("steer", ["--config", "x.json", "--task", "mmlu"])
    assert [*getattr(ctx, "_protected_args", []), *ctx.args][:1] == ["apply"]
    ctx = steer.make_context("steer", ["--task", "sst2", "--threads", "2", "zerotuning"])
    assert [*getattr(ctx, "_protected_args", []), *ctx.args][:1] == ["zerotuning"]
    ev = ROOT.commands["sparsify"].commands["eval"]  # type: ignore[attr-defined]
    for argv in (
        ["--lengths", "2048", "4096", "8192"],
        ["--lengths", "2048,4096", "--lengths", "8192"],
        ["-l", "2048,4096,8192"],
    ):
        ctx = ev.make_context("eval", [*argv, "--trials", "3"])
        lengths = C.split_list([*ctx.params["lengths"], *ctx.args], "--lengths", int)
        assert lengths == [2048, 4096, 8192] and ctx.params["trials"] == 3
