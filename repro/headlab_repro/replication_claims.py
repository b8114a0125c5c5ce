"""Prospective replications of the met lab claims on fresh seeds, registered before any run.

Every met lab claim so far is *exploratory* (see :mod:`headlab_repro.evidence`): its numbers were seen before
its rule, or it was a redesign, or its run recorded no start commit. A replication reruns the registered design
unchanged on seeds never used (1, 2, 3 for the one-seed claims; 3, 4, 5 for the three-seed ``sinks-dormant``),
judges each seed with the original rule, and is met only when **every** seed meets it.

Power (fixed here, before any run): the experiments are deterministic given a seed, so the per-seed outcome
is a Bernoulli draw over seeds. If the effect the paper claims is real and robust (per-seed pass probability
≥ 0.95), all three seeds pass with probability ≥ 0.95³ = 0.857 (≥ 80 % power); a fragile effect that holds in
half the seeds passes all three with probability 0.125, so a met replication separates the two. A failed seed
is reported with its numbers, as prominently as the passes.
"""

from __future__ import annotations

import re
from pathlib import Path

from .claims import Claim, get, number, register

REP = "replications"
ONE_SEED = (1, 2, 3)
_SEED = re.compile(r"--seed 0\b")


def _per_seed_commands(base: Claim, seeds: tuple[int, ...]) -> tuple[str, ...]:
    line = base.command[0]
    if len(base.command) != 1 or not _SEED.search(line) or "{out}" not in line:
        raise ValueError(f"{base.name}: a replication needs one command with '--seed 0' and '{{out}}'")
    return tuple(_SEED.sub(f"--seed {s}", line).replace("{out}", f"{{out}}/seed{s}") for s in seeds)


def _collector(base_name: str, seeds: tuple[int, ...]):
    def collect(out: Path) -> tuple[dict, list[dict], dict]:
        base = get(base_name)
        raws, records, files = {}, [], {"raw": [], "plot": [], "records": []}
        for s in seeds:
            raw, recs, f = base.collect(Path(out) / f"seed{s}")
            raws[str(s)] = raw
            records += [{"seed": s, **r} for r in recs]
            for k in files:
                v = f.get(k)
                files[k] += [f"seed{s}/{x}" for x in ([v] if isinstance(v, str) else v or [])]
        cfgs = [r.get("config", {}) for r in raws.values()]
        common = {k: v for k, v in cfgs[0].items() if k != "seed" and all(c.get(k) == v for c in cfgs)}
        return {"by_seed": raws, "config": {**common, "replication_seeds": list(seeds)}}, records, files

    return collect


def _summary(base_name: str):
    def summarize(raw: dict) -> dict:
        base = get(base_name)
        out: dict = {}
        met = []
        for s, r in raw["by_seed"].items():
            nums = base.summarize(r)
            j = base.judge(nums)
            met.append(1 if j["rule_met"] else 0)
            out[f"seed{s}.rule_met"] = number(met[-1], n=1, verdict=j["verdict"])
            for k in base.show or list(nums)[:4]:
                if isinstance(nums.get(k), dict):
                    out[f"seed{s}.{k}"] = nums[k]
        out["seeds_met"] = number(sum(met) / len(met), n=len(met), k=sum(met))
        return out

    return summarize


def _rule(x: dict) -> list:
    seeds = sorted(k.split(".")[0][4:] for k in x if k.endswith(".rule_met"))
    conds = [
        (
            f"seed {s}: the original rule is met ({x[f'seed{s}.rule_met'].get('verdict', '')})",
            x[f"seed{s}.rule_met"]["value"] == 1,
        )
        for s in seeds
    ]
    return conds


def replicate(base_name: str, seeds: tuple[int, ...] = ONE_SEED, trained: tuple[int, ...] | None = None) -> Claim:
    """Register ``BASE-rep``: the base claim's command once per ``seeds`` (its ``--seed``), each judged by the base
    rule; ``trained``: the seeds the runs actually train (default ``seeds``; a ``--repeats 3`` command trains three
    from its one ``--seed``)."""
    base = get(base_name)
    trained = trained or seeds
    size = {k: v for k, v in base.size.items() if k != "seed"}
    return register(
        Claim(
            name=f"{base_name}-rep",
            table=REP,
            short=f"replication of {base_name} on fresh seeds {', '.join(map(str, trained))}",
            claim=base.claim,
            paper=base.paper,
            command=_per_seed_commands(base, seeds),
            size={**size, "replication_seeds": list(seeds)},
            rule=f"the registered rule of `{base_name}` holds in every run on the fresh seeds {list(trained)} "
            "(per-seed verdicts reported; power in the module docstring).",
            conditions=_rule,
            summarize=_summary(base_name),
            collect=_collector(base_name, seeds),
            cost_s=base.cost_s * len(seeds),
            seeds=trained,
            tolerance=base.tolerance,
            show=("seeds_met",),
            notes=f"a prospective replication of {base_name}, registered before any run of it",
        )
    )


for _name in ("memory-capacity", "icl-regression", "induction", "rf-mean", "moh-converged"):
    replicate(_name)
# one command training three fresh seeds (3, 4, 5; `--seed 3 --repeats 3`): the base rule itself asks for every seed
replicate("sinks-dormant", (3,), trained=(3, 4, 5))
