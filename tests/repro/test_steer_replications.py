"""Replications of the exploratory steering / attribution claims on fresh items (steer_replication_claims.py):
registered, their items disjoint from every earlier design's (computed from the registered command lines), their
command lines at their registered sizes, and rules that fail and pass for the right reasons."""

from __future__ import annotations

import math
import shlex

import pytest
from conftest import word_tokenizer

from headlab_repro import claims as C
from headlab_repro import steer_replication_claims as S

REPS = {
    "zerotuning-sst2-heldout-rep": "zerotuning-sst2-heldout",
    "act-sst2-heldout-rep": "act-sst2-heldout",
    "attention-vs-saliency-rep": "attention-vs-saliency",
    "retrieval-heads-needle-rep": "retrieval-heads-needle",
    "circuits-importance-rep": "circuits-importance",
}


def _opts(line: str) -> dict[str, str]:
    """``--option value`` pairs of a command line (flags without a value are left out)."""
    argv = shlex.split(line.format(out="OUT", results="RES"))
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--") and not argv[i + 1].startswith("--")}


def _sst2_eval_idx(line: str) -> list[int]:
    """Stored-order SST-2 indices that one ``headlab steer`` command line tuned on or evaluated on."""
    from headlab.data.tasks import load_task

    o = _opts(line)
    task = load_task("sst2")
    tune, ev = task.split(int(o["--tune-on"]), int(o["--eval-on"]), int(o.get("--seed", 0)))
    seen = ev if ("--config" in o or "--edits" in o) else tune + ev  # `apply` skips its tuning items
    return [int(it.meta["idx"]) for it in seen]


def test_every_replication_is_registered():
    claims = C.all_claims()
    for rep, base in REPS.items():
        c = claims[rep]
        assert base in claims and c.table == S.TABLE and c.smoke and c.smoke_size and c.rule and c.notes, rep
        assert "Power" in c.notes and "Items" in c.notes, rep
        assert all(d in claims for d in c.depends), rep
        assert C.get(base).command != c.command


def test_sst2_items_are_fresh():
    """Every SST-2 item a steering replication evaluates is outside every earlier design on SST-2 (computed from
    the registered commands: the steering claims, headhunt, and attention-vs-saliency's first prompts)."""
    earlier: set[int] = set()
    for name in ("zerotuning-sst2", "zerotuning-sst2-heldout", "act-sst2", "act-sst2-heldout", "site-sst2", "headhunt-sst2"):
        for line in C.get(name).command:
            earlier |= set(_sst2_eval_idx(line))
    for line in C.get("attention-vs-saliency").command:
        o = _opts(line)
        if o["--task"] == "sst2":
            earlier |= {int(i) for i in S.attribution_items("sst2", int(o["--items"]), 0, None)}
    assert earlier == S.sst2_used()  # the module's table of designs agrees with the registered command lines
    for rep in ("zerotuning-sst2-heldout-rep", "act-sst2-heldout-rep"):
        c = C.get(rep)
        got = [i for line in c.command for i in _sst2_eval_idx(line)]
        assert len(got) == len(set(got)) == c.size["items"] == 280
        assert not set(got) & earlier, rep
        # and the replication evaluates every SST-2 item that is still fresh: nothing left out by choice
        assert set(got) == set(range(S.SST2_N)) - earlier
        smoke = [i for line in c.smoke for i in _sst2_eval_idx(line)]
        assert len(smoke) == c.smoke_size["items"] and set(smoke) <= earlier  # a smoke never looks at a fresh item


def test_attribution_items_are_fresh():
    c, base = C.get("attention-vs-saliency-rep"), C.get("attention-vs-saliency")
    ours = {}
    for line in c.command:
        o = _opts(line)
        seed = int(o["--seed"]) if "--seed" in o else None
        ours[o["--task"]] = S.attribution_items(o["--task"], int(o["--items"]), int(o.get("--offset", 0)), seed)
        assert int(o["--items"]) == c.size[f"{o['--task']}_items"] == len(set(ours[o["--task"]]))
        assert int(o.get("--offset", 0)) == c.size[f"{o['--task']}_offset"]
    for line, smoke in zip(base.command, c.smoke):
        o, so = _opts(line), _opts(smoke)
        theirs = S.attribution_items(o["--task"], int(o["--items"]), 0, None)
        assert not set(theirs) & set(ours[o["--task"]]), o["--task"]
        seen = S.attribution_items(so["--task"], int(so["--items"]), int(so.get("--offset", 0)), None)
        assert set(seen) <= set(theirs)  # the smoke looks at the base's prompts only
    # SST-2: outside every steering design too
    assert not {int(i) for i in ours["sst2"]} & S.sst2_used()
    # SQuAD: outside the questions var-squad and vhr-squad tuned and evaluated on (their task: <= 1500 characters)
    from headlab.data.tasks import load_task

    squad = load_task("squad")
    for name in ("var-squad", "var-squad-p06", "vhr-squad", "vhr-squad-alpha2"):
        o = _opts(C.get(name).command[0])
        tune, ev = squad.split(int(o["--tune-on"]), int(o["--eval-on"]), int(o.get("--seed", 0)))
        assert not {it.meta["id"] for it in tune + ev} & set(ours["squad"]), name


def test_needles_are_fresh():
    c, base = C.get("retrieval-heads-needle-rep"), C.get("retrieval-heads-needle")
    from headlab.data.tasks.needle import make

    tok = word_tokenizer(["the", "pass", "key", "is"])
    theirs = set()
    for line in base.command[1:]:
        o = _opts(line)
        t = make(tok, n=int(o["--tune-on"]) + int(o["--eval-on"]), n_tokens=128, seed=int(o.get("--needle-seed", 0)))
        theirs |= {it.answers[0] for it in t.items}
    for line in c.command:
        o = _opts(line)
        n = int(o["--eval-on"])
        assert n == c.size["eval_on"] >= 50 and int(o["--needle-seed"]) == c.size["needle_seed"]
        assert int(o["--length"]) == c.size["n_tokens"] and int(o["--tune-on"]) == 0
        t = make(tok, n=n, n_tokens=128, seed=int(o["--needle-seed"]))
        keys = [it.answers[0] for it in t.items]
        assert len(set(keys)) == n and not set(keys) & theirs  # no pass key of the base's needles comes back
    for line in c.smoke:  # the smoke decodes the base's needles only
        o = _opts(line)
        t = make(tok, n=int(o["--eval-on"]), n_tokens=128, seed=int(o["--needle-seed"]))
        assert {it.answers[0] for it in t.items} <= theirs
    # one null per seed, layer-matched to the top-20 set
    sites = [_opts(line)["--sites"] for line in c.command]
    assert sites[0] == "retrieval:top20" and all(s.startswith("matched:retrieval:top20:") for s in sites[1:])
    assert len(set(sites)) == len(sites)


def test_importance_texts_are_fresh():
    from headlab.data import prose

    c, base = C.get("circuits-importance-rep"), C.get("circuits-importance")

    def paragraphs(line: str) -> set[str]:
        o = _opts(line)
        docs = prose.documents(int(o["--n-texts"]), min_chars=int(o["--max-tokens"]) * 6, seed=int(o.get("--seed", 0)))
        return {p for p in prose.texts() if any(p in d for d in docs)}

    ours, theirs = paragraphs(c.command[0]), paragraphs(base.command[0])
    assert ours and theirs and not ours & theirs
    assert paragraphs(c.smoke[0]) <= theirs  # the smoke reads the base's text only
    o = _opts(c.command[0])
    assert (int(o["--n-texts"]), int(o["--max-tokens"]), int(o["--seed"])) == (
        c.size["n_texts"],
        c.size["max_tokens"],
        c.size["seed"],
    )
    s = _opts(c.smoke[0])
    assert (int(s["--n-texts"]), int(s["--max-tokens"]), int(s["--seed"])) == tuple(
        c.smoke_size[k] for k in ("n_texts", "max_tokens", "seed")
    )


def test_sizes_in_the_commands_match_the_registered_size():
    for rep in ("zerotuning-sst2-heldout-rep", "act-sst2-heldout-rep"):
        c = C.get(rep)
        for cmds, size in ((c.command, c.size), (c.smoke, c.smoke_size)):
            runs = [(int(_opts(x)["--tune-on"]), int(_opts(x)["--eval-on"])) for x in cmds]
            assert sum(k for _, k in runs) == size["items"] and S._span(runs) == size["positions"]
    a = C.get("attention-vs-saliency-rep")
    for cmds, size in ((a.command, a.size), (a.smoke, a.smoke_size)):
        for line in cmds:
            o = _opts(line)
            t = o["--task"]
            assert int(o["--items"]) == size[f"{t}_items"] and int(o["--ig-steps"]) == size["ig_steps"]
            assert float(o["--top"]) == size["top"] and int(o["--max-chars"]) == size["max_chars"]
    r = C.get("retrieval-heads-needle-rep")
    for line in r.smoke:
        o = _opts(line)
        assert int(o["--eval-on"]) == r.smoke_size["eval_on"] and int(o["--length"]) == r.smoke_size["n_tokens"]


# ---------------------------------------------------------------------------------------------------- the rules
def _sst2_raw(gain: int, loss: int, both: int, n: int = 280) -> dict:
    rows = [[0, 1]] * gain + [[1, 0]] * loss + [[1, 1]] * both
    rows += [[0, 0]] * (n - len(rows))
    return {"pairs": {"part1": rows[:220], "part2": rows[220:]}}


@pytest.mark.parametrize("rep", ["zerotuning-sst2-heldout-rep", "act-sst2-heldout-rep"])
def test_sst2_rule_needs_mcnemar_and_the_interval(rep):
    c = C.get(rep)
    assert c.judge(c.summarize(_sst2_raw(20, 3, 150)))["rule_met"]
    fail = c.judge(c.summarize(_sst2_raw(9, 3, 150)))  # +2 points, p = 0.15: neither
    assert not fail["rule_met"] and not any(x["passed"] for x in fail["conditions"])
    worse = c.judge(c.summarize(_sst2_raw(3, 20, 150)))  # a significant loss is no gain
    assert not worse["rule_met"] and [x["passed"] for x in worse["conditions"]] == [False, False]
    # the two conditions are separate: McNemar alone is not enough
    x = c.summarize(_sst2_raw(20, 3, 150))
    x["difference"]["ci"] = [-0.001, 0.1]
    assert [y["passed"] for y in c.judge(x)["conditions"]] == [True, False]


def _attr_x(cov: tuple, sp: tuple) -> dict:
    x = {}
    for t in ("sst2", "squad"):
        x[f"{t}_mean_ig_coverage"] = {"value": cov[0], "ci": list(cov[1:]), "n": 16}
        x[f"{t}_mean_ig_spearman"] = {"value": sp[0], "ci": list(sp[1:]), "n": 16}
    return x


def test_attribution_rule_needs_the_interval_inside_the_band():
    c = C.get("attention-vs-saliency-rep")
    assert c.judge(_attr_x((0.5, 0.42, 0.58), (0.5, 0.45, 0.55)))["rule_met"]
    # the point mean in the band is not enough: the interval crosses 0.3
    j = c.judge(_attr_x((0.35, 0.28, 0.42), (0.5, 0.45, 0.55)))
    assert not j["rule_met"] and sum(not x["passed"] for x in j["conditions"]) == 2
    assert not c.judge(_attr_x((0.5, 0.42, 0.58), (0.8, 0.75, 0.85)))["rule_met"]
    x = _attr_x((0.5, 0.42, 0.58), (0.5, 0.45, 0.55))
    x["squad_mean_ig_spearman"] = {"value": None, "ci": None, "n": 0}  # no finite value: fails
    assert not c.judge(x)["rule_met"]
    # the rollout view, which the base could pick, is not judged
    x = _attr_x((0.5, 0.42, 0.58), (0.5, 0.45, 0.55))
    x["sst2_rollout_ig_coverage"] = {"value": 0.1, "ci": [0.05, 0.15], "n": 16}
    assert c.judge(x)["rule_met"]


TOP = [[14, 1], [17, 3], [17, 4], [17, 5], [18, 6], [18, 7], [19, 5], [20, 3], [20, 6], [21, 5]]


def _ret_raw(top_lost: int, null_lost: int, n: int = 60, matched: bool = True) -> dict:
    from headlab.edits.select import matched_random_sites

    ref: dict[int, list[int]] = {}
    for l, h in TOP:
        ref.setdefault(l, []).append(h)
    sites = {"top20": TOP}
    pairs = {"top20": [[1, 0]] * top_lost + [[1, 1]] * (n - top_lost)}
    for s in S.MATCHED_SEEDS:
        m = matched_random_sites(ref, 9, s) if matched else {0: list(range(len(TOP)))}
        sites[f"matched{s}"] = [[l, h] for l, hs in m.items() for h in hs]
        pairs[f"matched{s}"] = [[1, 0]] * null_lost + [[1, 1]] * (n - null_lost)
    return {"pairs": pairs, "sites": sites}


def test_retrieval_rule_needs_a_drop_a_harmless_layer_matched_null_and_the_paired_gap():
    c = C.get("retrieval-heads-needle-rep")
    assert c.judge(c.summarize(_ret_raw(48, 3)))["rule_met"]
    j = c.judge(c.summarize(_ret_raw(48, 30)))  # the null drops as much as half: the top-20 is not special
    assert not j["rule_met"]
    assert not c.judge(c.summarize(_ret_raw(3, 0)))["rule_met"]  # no drop
    assert not c.judge(c.summarize(_ret_raw(48, 3, matched=False)))["rule_met"]  # a null that is not layer-matched


def test_importance_rule():
    c = C.get("circuits-importance-rep")
    x = {
        "spearman_delta_nll_vs_taylor": {"value": 0.9, "n": 270},
        "spearman_kl_vs_abs_taylor": {"value": 0.6, "n": 270},
    }
    assert c.judge(x)["rule_met"]
    x["spearman_kl_vs_abs_taylor"]["value"] = 0.45
    assert not c.judge(x)["rule_met"]


def test_power_helpers():
    # McNemar-and-interval power grows with n and matches the notes
    p280, p400 = S.paired_power(280, 17 / 400, 3 / 400), S.paired_power(400, 17 / 400, 3 / 400)
    assert 0.6 < p280 < p400 and p400 > 0.8
    assert S.paired_power(50, 0.01, 0.01) < 0.05  # no effect: about the false-positive rate, one-sided
    assert f"{p280:.2f}" in C.get("zerotuning-sst2-heldout-rep").notes
    assert S.band_power(16, 0.5, 0.1) > 0.99 and S.band_power(4, 0.32, 0.1) < 0.1
    assert S.rho_power(0.5, 0.5, 270) == pytest.approx(0.5)
    assert math.isclose(S.rho_power(0.9, 0.5, 270), 1.0, abs_tol=1e-6)
    with pytest.raises(ValueError):
        S.paired_power(0, 0.1, 0.1)
