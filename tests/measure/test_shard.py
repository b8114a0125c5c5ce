"""Batched and sharded scans: batched == one text at a time; shards 1..n saved, loaded and merged ==
the unsharded scan (float64 sums); probe state_dict / merge; bad shard specs and bad merges named,
nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_tiny_llama
from typer.testing import CliRunner

import headlab  # noqa: F401
from headlab.cli import app
from headlab.measure.scan import query_states, run_scan, scan_part
from headlab.measure.shard import load_part, merge_parts, parse_shard, save_part, shard_indices
from headlab.measure.stats import head_stats
from headlab.probes import make_probe

QUERY = ["sink", "sink_rate", "entropy", "prev_token", "distance"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from headlab.models import load

    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny-shard"))
    m, tok = load(str(folder))
    return folder, m, tok


def _texts(n: int = 7, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        length = 9 + 7 * k % 23  # awkward, unequal lengths: 9 .. 31 words
        out.append(" ".join(f"w{int(t)}" for t in torch.randint(0, 100, (length,), generator=g)))
    return out


def test_batched_scan_equals_one_text_at_a_time(tiny):
    _, m, tok = tiny
    texts = _texts(7)
    one = run_scan(m, tok, "tiny", texts, QUERY, max_tokens=64, head_maps=0, batch_size=1)
    for bs in (3, 7):
        many = run_scan(m, tok, "tiny", texts, QUERY, max_tokens=64, head_maps=0, batch_size=bs)
        for k in QUERY:
            assert torch.allclose(many.stats[k], one.stats[k], atol=1e-6, rtol=0), (k, bs)
        assert many.meta["texts"] == one.meta["texts"]


def test_query_states_match_head_stats_per_text_and_add_up(tiny):
    _, m, tok = tiny
    ids = [torch.randint(0, 100, (1, n), generator=torch.Generator().manual_seed(n)) for n in (5, 17, 11)]
    st = query_states(m, ids, ["sink", "entropy"], batch_size=2)
    # counts: every valid query of every layer's calls (no padding counted)
    assert torch.equal(st["entropy"]["count"], torch.full((2, 3), 33.0, dtype=torch.float64))
    # sums equal the per-text head_stats means times lengths
    want = sum(head_stats(m, x, ["entropy"])["entropy"].double() * x.shape[1] for x in ids)
    assert torch.allclose(st["entropy"]["total"], want, atol=1e-4)


def test_probe_state_dict_merge_roundtrip():
    a, b = make_probe("entropy"), make_probe("entropy")
    a.reset(2, 3)
    b.reset(2, 3)
    a.add_row(0, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 2.0]))
    b.add_row(0, torch.tensor([3.0, 0.0, 1.0]), torch.tensor([1.0, 3.0, 2.0]))
    b.add_row(1, torch.tensor([2.0, 2.0, 2.0]), torch.tensor([2.0, 2.0, 2.0]))
    sa = a.state_dict()
    assert sa["total"].dtype == torch.float64 and sa["name"] == "entropy"
    a.merge(b)
    assert torch.allclose(a.result()[0], torch.tensor([2.0, 0.5, 1.0]))
    c = make_probe("entropy")
    c.load_state_dict(sa)
    assert torch.equal(c.state_dict()["total"], sa["total"])
    with pytest.raises(ValueError, match="'sink'"):
        c.merge(make_probe("sink").merge({"name": "sink", "total": torch.zeros(2, 3), "count": torch.ones(2, 3)}))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        c.merge({"name": "entropy", "total": torch.zeros(3, 3), "count": torch.ones(3, 3)})


@pytest.mark.parametrize("spec", ["3/2", "0/0", "0/2", "a/b", "1", "1/2/3"])
def test_bad_shard_specs_are_named(spec):
    with pytest.raises(ValueError, match=spec.split("/")[0]):
        parse_shard(spec)


def test_shard_indices_cover_every_text_once():
    for n_texts in (1, 5, 7, 12):
        for n in range(1, n_texts + 1):
            got = [k for i in range(1, n + 1) for k in shard_indices(n_texts, (i, n))]
            assert got == list(range(n_texts))
    with pytest.raises(ValueError, match="4 shards for 3 texts"):
        shard_indices(3, (1, 4))


def test_sharded_and_merged_equals_unsharded(tiny, tmp_path):
    _, m, tok = tiny
    texts = _texts(7)
    metrics = [*QUERY, "induction"]
    whole = run_scan(m, tok, "tiny", texts, metrics, max_tokens=64, head_maps=0, out=tmp_path / "whole")
    dirs = []
    for i in (3, 1, 2):  # any order
        d = tmp_path / f"part{i}"
        save_part(d, scan_part(m, tok, "tiny", texts, metrics, max_tokens=64, shard=f"{i}/3"))
        dirs.append(d)
    merged = merge_parts([load_part(d) for d in dirs], [str(d) for d in dirs])
    whole_part = scan_part(m, tok, "tiny", texts, metrics, max_tokens=64)
    for k in QUERY:
        for f in ("total", "count"):
            assert torch.allclose(merged.states[k][f], whole_part.states[k][f], atol=1e-9, rtol=0), (k, f)
        assert torch.allclose(merged.stats()[k].double(), whole.stats[k].double(), atol=1e-6, rtol=0)
    assert torch.equal(merged.fixed["induction"].float(), whole.stats["induction"].float())
    # the CLI merge writes the same report as one run
    r = CliRunner().invoke(app, ["merge", *map(str, dirs), "--out", str(tmp_path / "merged"), "--quiet"])
    assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "whole" / "heads.json").read_text())
    b = json.loads((tmp_path / "merged" / "heads.json").read_text())
    assert len(a) == len(b) == 2 * 3
    for ra, rb in zip(a, b, strict=True):
        assert ra["roles"] == rb["roles"]
        for k in metrics:
            assert ra[k] == pytest.approx(rb[k], abs=1e-6)
    ta = json.loads((tmp_path / "whole" / "texts.json").read_text())
    assert ta == json.loads((tmp_path / "merged" / "texts.json").read_text())
    assert (tmp_path / "merged" / "atlas.png").exists()


def test_bad_merges_are_named_and_write_nothing(tiny, tmp_path):
    folder, m, tok = tiny
    texts = _texts(4)
    parts = {i: scan_part(m, tok, "tiny", texts, ["sink", "entropy"], max_tokens=64, shard=(i, 2)) for i in (1, 2)}
    with pytest.raises(ValueError, match="overlapping partials: shard 1/2"):
        merge_parts([parts[1], parts[1]])
    with pytest.raises(ValueError, match="missing shards 2/2"):
        merge_parts([parts[1]])
    other_metrics = scan_part(m, tok, "tiny", texts, ["sink"], max_tokens=64, shard=(2, 2))
    with pytest.raises(ValueError, match="different metrics"):
        merge_parts([parts[1], other_metrics])
    other_texts = scan_part(m, tok, "tiny", _texts(4, seed=1), ["sink", "entropy"], max_tokens=64, shard=(2, 2))
    with pytest.raises(ValueError, match="different texts"):
        merge_parts([parts[1], other_texts])
    from headlab.models import load

    m2, tok2 = load(str(save_tiny_llama(tmp_path / "other-model", seed=1)))
    other_model = scan_part(m2, tok2, "tiny2", texts, ["sink", "entropy"], max_tokens=64, shard=(2, 2))
    with pytest.raises(ValueError, match="different models.*'tiny2'"):
        merge_parts([parts[1], other_model])
    old = scan_part(m, tok, "tiny", texts, ["sink", "entropy"], max_tokens=64, shard=(2, 2))
    old.meta["headlab_version"] = "0.0.1"
    with pytest.raises(ValueError, match="different headlab versions.*0.0.1"):
        merge_parts([parts[1], old])
    three = scan_part(m, tok, "tiny", texts, ["sink", "entropy"], max_tokens=64, shard=(3, 3))
    with pytest.raises(ValueError, match="3/3"):
        merge_parts([parts[1], three])
    # through the CLI: exit 2, the value named, no report folder
    for d, p in (("a", parts[1]), ("b", old)):
        save_part(tmp_path / d, p)
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "0.0.1" in r.output
    assert not (tmp_path / "rep").exists()
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "shard 1/2" in r.output and not (tmp_path / "rep").exists()
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "nowhere" in r.output and not (tmp_path / "rep").exists()


def test_cli_scan_shard_and_batch(tiny, tmp_path):
    folder, _, _ = tiny
    tf = tmp_path / "texts.txt"
    tf.write_text("\n\n".join(_texts(5)))
    base = ["scan", "--model", str(folder), "--texts", str(tf), "--metrics", "sink,entropy", "--max-tokens", "64", "--quiet"]
    for spec in ("3/2", "0/0"):
        r = CliRunner().invoke(app, [*base, "--shard", spec, "--out", str(tmp_path / "bad")])
        assert r.exit_code == 2 and spec in r.output, r.output
        assert not (tmp_path / "bad").exists()
    r = CliRunner().invoke(app, [*base, "--batch-size", "0", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "--batch-size" in r.output and not (tmp_path / "bad").exists()
    for i in (1, 2):
        r = CliRunner().invoke(app, [*base, "--shard", f"{i}/2", "--batch-size", "2", "--out", str(tmp_path / f"s{i}")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"s{i}" / "partial.json").exists() and not (tmp_path / f"s{i}" / "heads.json").exists()
    r = CliRunner().invoke(app, [*base, "--batch-size", "3", "--out", str(tmp_path / "whole")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "m"), "-q"])
    assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "whole" / "heads.json").read_text())
    b = json.loads((tmp_path / "m" / "heads.json").read_text())
    for ra, rb in zip(a, b, strict=True):
        assert ra["sink"] == pytest.approx(rb["sink"], abs=1e-6)
        assert ra["entropy"] == pytest.approx(rb["entropy"], abs=1e-6)


def test_thread_options_default_to_torch_and_set_on_request():
    """No hard thread caps: lab, sparsify eval and bench leave torch's own count unless --threads is given."""
    from headlab.cli import lab as cli_lab

    before = torch.get_num_threads()
    try:
        cli_lab._options(threads=0)
        cli_lab._threads()
        assert torch.get_num_threads() == before
        cli_lab._options(threads=1)
        cli_lab._threads()
        assert torch.get_num_threads() == 1
    finally:
        cli_lab._options(threads=0)
        torch.set_num_threads(before)
    r = CliRunner().invoke(app, ["lab", "--threads", "-1", "sinks", "--smoke"])
    assert r.exit_code == 2 and "-1" in r.output
    r = CliRunner().invoke(app, ["bench", "kernels", "--threads", "-1", "--out", ""])
    assert r.exit_code == 2 and "--threads" in r.output
