"""Cost of streaming head statistics vs a plain SDPA forward, and vs eager output_attentions.

Each configuration runs in its own subprocess (so peak RSS is its own), configurations are
interleaved over repeats, and ratios are taken between medians measured in this one run.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_scan.py --lengths 2048 8192 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
import headlab
from headlab.models import DEFAULT_MODEL, load
from headlab.data import prose
from headlab.measure.stats import forward_for_attention
mode, n = sys.argv[1], int(sys.argv[2])
model, tok = load(DEFAULT_MODEL)
text = " ".join(prose.texts())
ids = tok(text, return_tensors="pt")["input_ids"][:, :n]
assert ids.shape[1] == n
def once():
    with torch.no_grad():
        if mode == "sdpa":
            forward_for_attention(model, ids)
        elif mode == "stream":
            with headlab.attach(model, probes=["sink", "entropy", "prev_token", "distance"]):
                forward_for_attention(model, ids)
        elif mode == "eager":
            model.set_attn_implementation("eager")
            model.model(input_ids=ids, output_attentions=True, use_cache=False)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); once(); dt = time.perf_counter() - t
print(json.dumps({"mode": mode, "n": n, "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_load_mb": rss0 / 1024}))
"""


def run(mode: str, n: int, threads: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(n), str(threads)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE")),
    )
    if r.returncode:
        raise SystemExit(f"{mode} at {n} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-eager", action="store_true", help="skip the output_attentions comparison")
    a = ap.parse_args()
    for n in a.lengths:
        modes = ["sdpa", "stream"] + (["eager"] if n <= 2048 and not a.no_eager else [])
        res: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(a.repeats):
            for m in modes:
                res[m].append(run(m, n, a.threads))
        med = {m: statistics.median(x["seconds"] for x in v) for m, v in res.items()}
        rss = {m: max(x["peak_rss_mb"] for x in v) for m, v in res.items()}
        print(f"\n== {n} tokens, {a.threads} threads, median of {a.repeats} (each run in its own process) ==")
        print(f"{'mode':8} {'seconds':>8} {'peak RSS MB':>12} {'time ratio':>11} {'RSS ratio':>10}")
        for m in modes:
            print(f"{m:8} {med[m]:8.2f} {rss[m]:12.0f} {med[m] / med['sdpa']:11.2f} {rss[m] / rss['sdpa']:10.2f}")


if __name__ == "__main__":
    main()
