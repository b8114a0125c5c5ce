"""The import direction written in pyproject.toml ([tool.importlinter]) holds.

Checked twice: by ``lint-imports`` itself when it is installed, and by a small pure-Python reading
of every ``import`` in src/headlab (including imports inside functions) against the same contracts,
so the direction is enforced even where import-linter is absent."""

import ast
import functools
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def contracts() -> list[dict]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return cfg["contracts"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """{module: headlab modules it imports}, from every import statement (top level or not)."""
    files = {module_name(p): p for p in (SRC / "headlab").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from pkg import name` imports pkg.name when that is a module, else pkg
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            out.update(t for t in targets if t == "headlab" or t.startswith("headlab."))
        graph[mod] = out - {mod}
    return graph


def _in(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def _layer_members(spec: str) -> list[str]:
    for sep in ("|", ":"):
        if sep in spec:
            return [s.strip() for s in spec.split(sep)]
    return [spec.strip()]


def _chain(graph: dict[str, set[str]], starts: list[str], goal: str) -> list[str] | None:
    """A shortest import chain from a module under one of ``starts`` to a module under ``goal``."""
    prev: dict[str, str | None] = {m: None for m in graph if any(_in(m, s) for s in starts)}
    todo = deque(prev)
    while todo:
        m = todo.popleft()
        if _in(m, goal):
            chain = [m]
            while prev[chain[-1]] is not None:
                chain.append(prev[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for n in sorted(graph.get(m, ())):
            if n not in prev:
                prev[n] = m
                todo.append(n)
    return None


def violations(graph: dict[str, set[str]], cons: list[dict]) -> list[str]:
    """Broken contracts, each as "<contract id>: <import chain>" (any chain of imports counts:
    a lower layer reaching a higher one, an independent sibling reaching another, a source reaching
    a forbidden module)."""
    bad = []
    for c in cons:
        if c["type"] == "layers":
            layers = [_layer_members(s) for s in c["layers"]]
            for hi, upper in enumerate(layers):
                for lower in layers[hi + 1 :]:
                    for target in upper:
                        ch = _chain(graph, lower, target)
                        if ch:
                            bad.append(f"{c['id']}: {' -> '.join(ch)}")
            for spec, members in zip(c["layers"], layers):
                if "|" in spec:
                    for a in members:
                        for b in members:
                            ch = _chain(graph, [a], b) if a != b else None
                            if ch:
                                bad.append(f"{c['id']}: {' -> '.join(ch)}")
        elif c["type"] == "forbidden":
            for f in c["forbidden_modules"]:
                ch = _chain(graph, c["source_modules"], f)
                if ch:
                    bad.append(f"{c['id']}: {' -> '.join(ch)}")
        elif c["type"] == "independence":
            for a in c["modules"]:
                for b in c["modules"]:
                    if a != b:
                        ch = _chain(graph, [a], b)
                        if ch:
                            bad.append(f"{c['id']}: {' -> '.join(ch)}")
        else:
            raise AssertionError(f"unknown contract type {c['type']!r}")
    return bad


def test_contracts_name_the_layers():
    layers = next(c for c in contracts() if c["type"] == "layers" and c["id"] == "layers")["layers"]
    assert layers[0] == "headlab.cli"
    assert set(_layer_members(layers[4])) == {
        "headlab.probes",
        "headlab.edits",
        "headlab.patterns",
        "headlab.kernels",
        "headlab.modules",
    }
    assert layers[5] == "headlab.engine"
    assert "headlab.measure" in _layer_members(layers[2])


def test_every_package_sits_in_a_layer():
    """No room of the house outside the contracts: every top-level package or module of headlab is in a layer."""
    layers = next(c for c in contracts() if c["id"] == "layers")["layers"]
    named = {m for spec in layers for m in _layer_members(spec)}
    here = {
        f"headlab.{p.stem if p.is_file() else p.name}"
        for p in (SRC / "headlab").iterdir()
        if (p.is_file() and p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert here - named == set(), f"not in any layer: {sorted(here - named)}"


def test_no_import_circles_between_packages():
    """Collapsed to top-level packages (headlab.X), the import graph has no cycle."""
    graph = import_graph()
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    pk: dict[str, set[str]] = {}
    for m, deps in graph.items():
        if m == "headlab":
            continue  # the package root re-exports the public API lazily (by name, at first use)
        pk.setdefault(top(m), set()).update(top(d) for d in deps if d != "headlab" and top(d) != top(m))
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(pk.get(n, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[n] = 2

    for n in sorted(pk):
        if n not in state:
            visit(n, [n])


def test_import_direction_holds_in_the_source():
    graph = import_graph()
    assert "headlab.engine.hf" in graph and "headlab.probes.sink" in graph
    assert violations(graph, contracts()) == []


@pytest.mark.parametrize(
    "src,dst,want",
    [
        ("headlab.engine.attend", "headlab.probes", "layers: headlab.engine.attend -> headlab.probes"),  # engine on a plug-in
        ("headlab.probes.sink", "headlab.measure.stats", "plugins-run-no-model: headlab.probes.sink -> headlab.measure.stats"),
        ("headlab.edits.ablate", "headlab.probes.base", "plugins-independent: headlab.edits.ablate -> headlab.probes.base"),
        ("headlab.patterns.window", "headlab.kernels", "kernels-on-patterns: headlab.patterns.window -> headlab.kernels"),
        ("headlab.steer.run", "headlab.bench.kernels", "applications-independent: headlab.steer.run -> headlab.bench.kernels"),
        ("headlab.patterns.window", "headlab", "layers: headlab.patterns.window -> headlab -> "),  # through the package root
    ],
)
def test_checker_catches_each_kind_of_violation(src, dst, want):
    fake = {k: set(v) for k, v in import_graph().items()}
    fake[src].add(dst)
    bad = violations(fake, contracts())
    assert any(b.startswith(want) for b in bad), bad


def test_plugins_import_nothing_inside_functions_to_dodge_cycles():
    """The plug-ins and the engine need no function-level imports of headlab modules any more."""
    hidden = []
    for pkg in ("probes", "edits"):
        for path in (SRC / "headlab" / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(fn):
                        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("headlab")):
                            hidden.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert hidden == []


@pytest.mark.skipif(
    shutil.which("lint-imports") is None and not (Path(sys.executable).parent / "lint-imports").exists(),
    reason="import-linter is not installed (pip install -e '.[test]')",
)
def test_lint_imports_passes():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout
