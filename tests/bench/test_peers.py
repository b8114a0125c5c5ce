"""``headlab bench peers``: the statistics-from-maps path against headlab's probes and the hand formulas on a tiny
random GQA Llama at an awkward length, the memory estimate, parity, the run / report writer on synthetic
samples (no process is started), the claim's rule (a pass and three fails), missing peers, the CLI's errors;
marked: the real model in fresh processes (``model``) and the peers' venv (``slow``, skipped when absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import _tiny_llama
from formulas import formulas_from_attentions
from typer.testing import CliRunner

from headlab.bench import peers as P
from headlab.bench.peers_child import METRICS, MapStats, map_stats

REPO = Path(__file__).resolve().parents[2]
PEERS_PY = REPO / "build" / "peers-venv" / "bin" / "python"


# ------------------------------------------------------------------------------------------ statistics from maps
def _maps(model, ids):
    model.set_attn_implementation("eager")
    with torch.no_grad():
        return model(input_ids=ids, output_attentions=True, use_cache=False).attentions


@pytest.mark.parametrize("chunk", [512, 10])
def test_map_stats_equal_headlab_probes_on_tiny_gqa_llama(chunk):
    import headlab

    model = _tiny_llama(heads=3, kv=1, layers=2)  # 3 query heads on 1 KV head
    ids = torch.randint(3, 101, (1, 63), generator=torch.Generator().manual_seed(1))
    streamed = headlab.head_stats(model, ids, metrics=list(METRICS))  # SDPA + streaming probes, no maps
    maps = _maps(model, ids)
    acc = MapStats(2, 3, 1, chunk=chunk)
    for layer, a in enumerate(maps):
        acc.add(layer, a)
    got = acc.result()
    hand = formulas_from_attentions(maps, torch.ones(1, 63))
    for m in METRICS:
        assert got[m].shape == (2, 3)
        assert torch.allclose(got[m].double(), hand[m], atol=1e-6), m  # the formulas, by hand
        scale = 63.0 if m == "distance" else 1.0
        assert float((got[m] - streamed[m]).abs().max()) / scale <= 1e-5, m  # headlab's own streaming numbers
    assert set(map_stats(maps, 1)) == set(METRICS)


def test_map_stats_refuses_bad_maps():
    acc = MapStats(2, 3, 1)
    with pytest.raises(ValueError, match="expected a"):
        acc.add(0, torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="outside"):
        acc.add(2, torch.rand(1, 3, 4, 4))
    acc.add(0, torch.full((1, 3, 4, 4), 0.25))
    with pytest.raises(RuntimeError, match=r"layers \[1\]"):
        acc.result()
    with pytest.raises(ValueError, match="multiple"):
        MapStats(2, 3, 2)


# ------------------------------------------------------------------------------------------ memory and parity
def test_memory_estimate():
    assert P.maps_bytes(30, 9, 8192) == 30 * 9 * 8192 * 8192 * 4  # 72.5 GB: SmolLM2's maps at 8192 tokens
    assert round(P.gb(P.maps_bytes(30, 9, 8192)), 1) == 72.5
    assert round(P.gb(P.maps_bytes(30, 9, 2048)), 2) == 4.53
    assert P.maps_bytes(1, 1, 3, dtype_bytes=2) == 18
    assert P.needed_bytes("headlab", 30, 9, 8192, 500) == 500 == P.needed_bytes("sdpa", 30, 9, 8192, 500)
    assert P.needed_bytes("tl", 30, 9, 2048, 500) == 500 + P.maps_bytes(30, 9, 2048)
    assert 0 < P.memory_limit_bytes(0.5) < P.memory_limit_bytes(1.0)
    for bad in ((0, 9, 8), (30, 9, 0), (30, 9.0, 8)):
        with pytest.raises(ValueError):
            P.maps_bytes(*bad)  # type: ignore[arg-type]


def test_parity():
    ref = {m: [[0.5, 0.25], [0.1, 0.2]] for m in METRICS}
    near = {m: [[0.5 + 5e-5, 0.25], [0.1, 0.2]] for m in METRICS}
    near["distance"] = [[0.5 + 5e-3, 0.25], [0.1, 0.2]]  # 5e-3 tokens at 100 tokens: 5e-5 of the length
    par = P.stats_parity(near, ref, 100)
    assert par["sink"] == pytest.approx(5e-5) and par["distance"] == pytest.approx(5e-5)
    assert P.parity_ok("capture", par)
    far = {**near, "entropy": [[0.5, 0.25], [0.1, 0.2 + 2e-4]]}
    assert not P.parity_ok("capture", P.stats_parity(far, ref, 100))
    assert not P.parity_ok("capture", None)
    h = {"raw": [[1.0, 3.0]], "clean": 5.0, "corrupt": 1.0}
    q = {"raw": [[1.0, 3.0 + 2e-5]], "clean": 5.0, "corrupt": 1.0}
    pp = P.patching_parity(q, h)
    assert pp["effect"] == pytest.approx(5e-6) and pp["raw_change"] == pytest.approx(2e-5) and pp["gap"] == 4.0
    assert P.parity_ok("patching", pp)
    small = P.patching_parity({**q, "clean": 1.2}, {**h, "clean": 1.2})  # gap 0.2: raw changes are compared
    assert small["gap"] == pytest.approx(0.2) and P.parity_ok("patching", small)


# ------------------------------------------------------------------------------------------ the run, on synthetic samples
L, H = 2, 3


def _folder(tmp_path: Path) -> Path:
    f = tmp_path / "model"
    f.mkdir()
    (f / "config.json").write_text(json.dumps({"num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": 1}))
    (f / "model.safetensors").write_bytes(b"\0" * 1000)
    return f


def _stats(delta=0.0):
    return {m: [[0.1 * (l + 1) + 0.01 * h + delta for h in range(H)] for l in range(L)] for m in METRICS}


#: seconds per tool (capture at every length; patching) of the synthetic runs
FAST = {"sdpa": 1.0, "headlab": 1.2, "eager": 3.0, "tl": 4.0, "tl-bridge": 5.0, "nnsight": 3.5}


def _spawner(seconds=FAST, patch_seconds=None, delta=None, fail=()):
    patch_seconds = patch_seconds or {"headlab": 2.0, "tl": 8.0, "tl-bridge": 6.0, "nnsight": 9.0}
    delta = delta or {}
    calls: list[tuple[str, dict]] = []
    seen: dict[tuple, int] = {}

    def spawn(python: str, spec: dict) -> dict:
        calls.append((python, spec))
        t = spec["tool"]
        key = (spec["task"], t, len(spec.get("ids", ())))
        k = seen[key] = seen.get(key, -1) + 1  # the k-th run of this configuration: 1 % slower each time
        if t in fail:
            return {"error": "RuntimeError: boom", "stderr": "Traceback ..."}
        common = {"tool": t, "task": spec["task"], "cpu_seconds": 1.0, "load_seconds": 2.0, "after_load_mb": 500.0}
        common.update(run_peak_mb=900.0, peak_mb=1000.0 + 100 * len(t), peak_method="VmHWM", threads=spec["threads"])
        if spec["task"] == "capture":
            s = seconds[t] * (1 + 0.01 * k)
            st = None if t == "sdpa" else _stats(delta.get(t, 0.0))
            return {**common, "seconds": s, "forward_seconds": s * 0.8, "stats_seconds": s * 0.2, "stats": st}
        raw = [[1.0 + 0.5 * h + delta.get(t, 0.0) for h in range(H)] for _ in range(L)]
        return {**common, "seconds": patch_seconds[t], "raw": raw, "clean": 5.0, "corrupt": 1.0}

    return spawn, calls


AVAIL = {
    "eager": {"status": "ok", "python": sys.executable},
    "tl": {"status": "ok", "python": "/peers/bin/python"},
    "tl-bridge": {"status": "ok", "python": "/peers/bin/python"},
    "nnsight": {"status": "ok", "python": "/peers/bin/python"},
}
IOI = {"clean": [[1, 2, 3]] * 2, "corrupt": [[1, 4, 3]] * 2, "answer": [5, 6], "distractors": [[7], [8]]}


def _run(tmp_path, lengths=(64, 2048, 8192), repeats=3, avail=AVAIL, **kw):
    spawn, calls = _spawner(**kw)
    ids = {n: list(range(n)) for n in lengths}
    res = P.run(
        _folder(tmp_path),
        list(lengths),
        repeats,
        list(P.PEERS),
        threads=2,
        ioi=IOI,
        limit_bytes=20 * 10**9,
        ids=ids,
        availability=avail,
        spawner=spawn,
    )
    return res, calls


def test_run_alternates_fresh_processes_skips_what_cannot_fit_and_writes_the_report(tmp_path):
    res, calls = _run(tmp_path)
    cap = res["capture"]
    # 8192 tokens: 2 layers x 3 heads x 8192^2 x 4 bytes = 1.6 GB fits 20 GB; shrink the limit to see the skip
    assert cap["8192"]["tools"]["tl"]["status"] == "ran"
    order64 = [s["tool"] for _, s in calls if s["task"] == "capture" and len(s["ids"]) == 64]
    assert order64[:6] == ["sdpa", "headlab", "eager", "tl", "tl-bridge", "nnsight"]
    assert order64[6:12] == order64[:6][::-1]  # reversed in odd rounds
    assert {p for p, s in calls if s["tool"] in ("sdpa", "headlab", "eager")} == {sys.executable}
    assert {p for p, s in calls if s["tool"] in ("tl", "tl-bridge", "nnsight")} == {"/peers/bin/python"}
    row = cap["2048"]["tools"]["eager"]
    assert row["ratio"]["median"] == pytest.approx(3.0) and row["headlab_over"]["median"] == pytest.approx(0.4)
    assert row["parity_ok"] and row["parity"]["sink"] == 0.0
    assert cap["2048"]["best_peer"] == "eager" and cap["2048"]["headlab_vs_best"]["median"] == pytest.approx(0.4)
    pt = res["patching"]
    assert pt["best_peer"] == "tl-bridge" and pt["headlab_vs_best"]["median"] == pytest.approx(2 / 6)
    assert "eager" not in pt["tools"]  # no patching loop for plain transformers
    n_samples = 3 * (6 + 6 + 6) + 3 * 4
    assert len(res["samples"]) == n_samples and all("stats" not in s for s in res["samples"])

    out = P.write(res, tmp_path / "out", "headlab bench peers ...")
    doc = json.loads((out / "peers.json").read_text())
    assert doc["command"] == "headlab bench peers ..." and doc["config"]["lengths"] == [64, 2048, 8192]
    assert len((out / "peers.records.jsonl").read_text().splitlines()) == n_samples
    assert (out / "peers.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "table.md").read_text()
    assert "| 2048 | eager | 3.03 [3.00–3.06] | 3.00x |" in text and "ok (0.0e+00)" in text
    assert "Activation patching of every head (2 IOI prompt pairs of 3 tokens)" in text


def test_a_peer_that_cannot_fit_is_reported_with_the_memory_it_needs(tmp_path):
    spawn, calls = _spawner()
    res = P.run(
        _folder(tmp_path),
        [64, 8192],
        1,
        ["eager", "tl"],
        limit_bytes=10**9,  # 1 GB: the maps at 8192 tokens (1.6 GB) do not fit
        ids={64: [1] * 64, 8192: [1] * 8192},
        availability={k: AVAIL[k] for k in ("eager", "tl")},
        spawner=spawn,
    )
    row = res["capture"]["8192"]["tools"]["tl"]
    assert row["status"] == "skipped" and row["maps_gb"] == pytest.approx(P.gb(P.maps_bytes(L, H, 8192)))
    assert not any(s["tool"] == "tl" and len(s["ids"]) == 8192 for _, s in calls)
    assert res["capture"]["8192"]["best_peer"] is None
    assert "not run: maps need 1.6 GB (limit 1.0 GB)" in P.table(res)


def test_a_missing_peer_is_reported_as_missing_with_its_install_command(tmp_path):
    got = P.probe_peers(["eager", "tl", "nnsight"], tmp_path / "no-venv" / "bin" / "python")
    assert got["eager"]["status"] == "ok"
    for p in ("tl", "nnsight"):
        assert got[p]["status"] == "missing" and "no peers venv" in got[p]["why"]
        assert "scripts/peers_env.sh" in got[p]["install"]
    with pytest.raises(ValueError, match="unknown peer"):
        P.probe_peers(["eager", "bogus"], None)
    avail = {**AVAIL, "tl": got["tl"], "nnsight": got["nnsight"]}
    res, calls = _run(tmp_path, lengths=(64,), repeats=1, avail=avail)
    assert not any(s["tool"] in ("tl", "nnsight") for _, s in calls)  # never run, never faked
    assert res["capture"]["64"]["tools"]["tl"]["status"] == "missing" and "seconds" not in res["capture"]["64"]["tools"]["tl"]
    assert res["patching"]["tools"]["nnsight"]["status"] == "missing"
    assert "missing: no peers venv" in P.table(res) and "scripts/peers_env.sh" in P.table(res)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs a Linux /proc")
def test_a_venv_without_the_peer_packages_reports_them_missing():
    # headlab's own venv has neither TransformerLens nor nnsight (they live in the peers' venv)
    import importlib.util

    if importlib.util.find_spec("nnsight") is not None:
        pytest.skip("nnsight is installed in headlab's venv")
    got = P.probe_peers(["nnsight"], sys.executable)
    assert got["nnsight"]["status"] == "missing" and "not installed" in got["nnsight"]["why"]


def test_a_failed_peer_and_a_parity_failure_are_reported(tmp_path):
    res, _ = _run(tmp_path, lengths=(2048,), repeats=1, fail=("nnsight",), delta={"tl": 1e-3})
    tools = res["capture"]["2048"]["tools"]
    assert tools["nnsight"]["status"] == "failed" and "boom" in tools["nnsight"]["error"]
    assert tools["tl"]["parity_ok"] is False and tools["tl"]["parity"]["sink"] == pytest.approx(1e-3)
    assert res["capture"]["2048"]["best_peer"] == "eager"  # only peers with parity count
    text = P.table(res)
    assert "FAILED (1.0e-03)" in text and "failed: RuntimeError: boom" in text


# ------------------------------------------------------------------------------------------ the claim's rule
def _verdict(raw):
    from headlab_repro import claims as C  # pyright: ignore[reportMissingImports]

    c = C.get("bench-peers")
    x = c.summarize(json.loads(json.dumps(P.finite(raw))))  # as read back from peers.json
    return x, c.judge(x)


def test_claim_rule_passes_when_headlab_is_fast_enough_with_equal_numbers(tmp_path):
    spawn, _ = _spawner(seconds={**FAST, "headlab": 1.0, "eager": 2.5, "tl": 3.5, "tl-bridge": 4.0, "nnsight": 3.1})
    res = P.run(
        _folder(tmp_path),
        [512, 2048, 8192],
        2,
        list(P.PEERS),
        ioi=IOI,
        limit_bytes=10**9,  # every peer skipped at 8192 tokens: "no peer can run"
        ids={n: [1] * n for n in (512, 2048, 8192)},
        availability=AVAIL,
        spawner=spawn,
    )
    x, j = _verdict(res)
    assert x["vs_best@2048"]["value"] == pytest.approx(1.0 / 2.5) and x["vs_best@2048"]["best"] == "eager"
    assert x["vs_best@8192"]["skipped"] == {p: 1.6 for p in P.PEERS}
    assert j["rule_met"], j["verdict"]
    texts = [c["text"] for c in j["conditions"]]
    assert any("no peer can run" in t for t in texts) and not any("512 tokens" in t for t in texts)
    assert any("patching every head: headlab takes 0.33x" in t for t in texts)


@pytest.mark.parametrize(
    "case",
    ["slow", "parity", "missing"],
)
def test_claim_rule_fails(tmp_path, case):
    kw: dict = {}
    avail = AVAIL
    if case == "slow":  # headlab 1.2 s vs eager 2.0 s at 2048 tokens: 0.6x > 1/2
        kw["seconds"] = {**FAST, "eager": 2.0}
    elif case == "parity":
        kw["delta"] = {"nnsight": 5e-4}
    else:
        avail = {**AVAIL, "tl": {"status": "missing", "why": "no peers venv", "install": "bash scripts/peers_env.sh"}}
    res, _ = _run(tmp_path, lengths=(2048, 8192), repeats=2, avail=avail, **kw)
    _, j = _verdict(res)
    assert not j["rule_met"]
    failed = [c["text"] for c in j["conditions"] if not c["passed"]]
    want = {"slow": "0.60x the time of the best peer (eager", "parity": "parity failed: nnsight", "missing": "missing: tl"}[case]
    assert any(want in t for t in failed), failed


def test_claim_is_registered_with_its_table_and_sizes():
    from headlab_repro import claims as C  # pyright: ignore[reportMissingImports]

    c = C.get("bench-peers")
    assert c.table == "peers" and c.tolerance.kind == "ratio" and c.tolerance.value == 0.5
    assert c.size["lengths"] == [512, 2048, 8192] and c.size["peers"] == list(P.PEERS)
    assert "--lengths 512,2048,8192 --repeats 3" in c.command[0] and "{out}" in c.command[0]
    assert "--lengths 128 --repeats 1" in c.smoke[0]
    doc = (REPO / "docs" / "results" / "benchmarks.md").read_text()
    assert "<!-- results:table:peers -->" in doc and "<!-- /results:table:peers -->" in doc


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_refuses_bad_options(tmp_path):
    from headlab.cli import app

    runner = CliRunner()
    for args, msg in (
        (["--peers", "eager,bogus"], "--peers"),
        (["--lengths", "1"], "--lengths"),
        (["--repeats", "0"], "--repeats"),
        (["--prompts", "-1"], "--prompts"),
    ):
        r = runner.invoke(app, ["bench", "peers", *args, "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and msg in r.output, r.output
    assert "peers" in runner.invoke(app, ["bench", "--help"]).output


def test_cli_end_to_end_on_a_tiny_folder_in_fresh_processes(tmp_path):
    """The whole pipeline — fresh processes of headlab's own venv, parity, the report — on a tiny random Llama
    saved as a folder (no peers' venv: its peers are reported missing)."""
    from conftest import REVIEW_WORDS, word_tokenizer

    from headlab.cli import app

    folder = tmp_path / "tiny"
    _tiny_llama(heads=3, kv=1, layers=2).save_pretrained(folder)
    word_tokenizer(REVIEW_WORDS).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "dtype": "float32"}))
    out = tmp_path / "out"
    args = ["bench", "peers", "--lengths", "33", "--repeats", "1", "--peers", "eager,nnsight", "--prompts", "0"]
    args += ["--model", str(folder), "--threads", "1", "--peers-python", str(tmp_path / "none"), "--out", str(out), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "peers.json").read_text())
    tools = doc["capture"]["33"]["tools"]
    assert tools["eager"]["status"] == "ran" and tools["eager"]["parity_ok"], tools["eager"]
    assert tools["nnsight"]["status"] == "missing" and doc["patching"] is None
    assert [s["tool"] for s in doc["samples"]] == ["sdpa", "headlab", "eager"]
    assert all(s["status"] == "ok" and s["peak_mb"] > 50 for s in doc["samples"])
    assert "| 33 | eager |" in r.output and "missing" in r.output


# ------------------------------------------------------------------------------------------ real model, fresh processes
def _child(python, tool, folder, task="capture", **extra):
    spec = {"folder": str(folder), "threads": 2, "warmup": 0, "task": task, "tool": tool, **extra}
    return P.spawn(str(python), spec)


@pytest.mark.model
def test_eager_maps_equal_headlab_on_smollm2_in_fresh_processes():
    folder = P.model_folder("smollm2-135m")
    ids = list(range(100, 164))
    h = _child(sys.executable, "headlab", folder, ids=ids)
    e = _child(sys.executable, "eager", folder, ids=ids)
    assert "error" not in h and "error" not in e, (h.get("stderr"), e.get("stderr"))
    assert len(h["stats"]["sink"]) == 30 and len(h["stats"]["sink"][0]) == 9
    assert P.parity_ok("capture", P.stats_parity(e["stats"], h["stats"], 64))
    assert h["peak_mb"] > 100 and h["peak_method"] in ("VmHWM", "ru_maxrss")


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(not PEERS_PY.exists(), reason="no peers venv: bash scripts/peers_env.sh build/peers-venv")
def test_peers_equal_headlab_on_smollm2():
    folder = P.model_folder("smollm2-135m")
    ids = list(range(100, 148))
    ref = _child(sys.executable, "headlab", folder, ids=ids)
    for tool in ("tl", "tl-bridge", "nnsight"):
        got = _child(PEERS_PY, tool, folder, ids=ids)
        assert "error" not in got, got.get("stderr")
        par = P.stats_parity(got["stats"], ref["stats"], len(ids))
        assert P.parity_ok("capture", par), (tool, par)
