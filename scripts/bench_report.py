"""Size and speed of the HTML head atlas for SmolLM2-135M at long context.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_report.py --tokens 2048 --threads 2

Steps: scan one prose text of N tokens (query metrics + induction), write DIR/index.html with head
maps computed by HeadMapProbe (one streaming forward pass), then open the page in headless
Chromium and time it. Prints sizes next to what dumping full maps would weigh (the bertviz way).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1700",
]


def browser_timing(page: Path, shot: Path | None, repeats: int = 3) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for f in FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="headlab-bench-")
    opts.add_argument(f"--user-data-dir={profile}")
    t0 = time.perf_counter()
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    start_s = time.perf_counter() - t0
    out = {"browser_start_s": round(start_s, 2), "runs": []}
    try:
        for _ in range(repeats):
            drv.get("about:blank")
            t0 = time.perf_counter()
            drv.get(page.as_uri())  # returns after the load event; the page renders synchronously before it
            ready = drv.execute_script("return document.body.getAttribute('data-ready')")
            wall = time.perf_counter() - t0
            nav = drv.execute_script(
                "var t = performance.getEntriesByType('navigation')[0]; return [t.domInteractive, t.loadEventEnd]"
            )
            out["runs"].append(
                {
                    "get_wall_s": round(wall, 3),
                    "ready": ready,
                    "dom_interactive_ms": round(nav[0]),
                    "load_event_end_ms": round(nav[1]),
                    "script_ms": round(drv.execute_script("return window.__headlabRenderMs")),
                }
            )
        # selecting another detailed head: decode + draw
        sel = drv.execute_script("var s = document.getElementById('detail-select'); return s ? s.options.length : 0")
        if sel > 2:
            t0 = time.perf_counter()
            drv.execute_script(
                "var s = document.getElementById('detail-select'); s.selectedIndex = 2; s.dispatchEvent(new Event('change'))"
            )
            out["select_head_s"] = round(time.perf_counter() - t0, 3)
        if shot is not None:
            shot.parent.mkdir(exist_ok=True)
            drv.execute_script("document.getElementById('head').scrollIntoView({behavior: 'instant'})")
            drv.save_screenshot(str(shot))
            drv.execute_script("window.scrollTo({top: 0, behavior: 'instant'})")
            drv.save_screenshot(str(shot.with_name(shot.stem + "_atlas.png")))
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="scan folder (default: a temporary one)")
    ap.add_argument("--max-map-px", type=int, default=256)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-eager", action="store_true", help="skip the no-op eager forward used as the time reference")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from headlab.data import prose
    from headlab.measure.maps import write_html_report
    from headlab.measure.scan import run_scan
    from headlab.models import DEFAULT_MODEL, load

    out = args.out or Path(tempfile.mkdtemp(prefix="headlab-report-bench-"))
    t0 = time.perf_counter()
    model, tok = load(DEFAULT_MODEL)
    print(f"load model: {time.perf_counter() - t0:.1f} s")
    text = prose.haystack(tok, args.tokens, seed=0)
    t0 = time.perf_counter()
    res = run_scan(
        model,
        tok,
        DEFAULT_MODEL,
        [text],
        ["sink", "sink_rate", "entropy", "prev_token", "distance", "induction"],
        max_tokens=args.tokens,
        out=out,
        command=" ".join(sys.argv),
    )
    n = res.meta["texts"][0]["n_tokens"]
    print(f"scan ({n} tokens, 6 metrics): {time.perf_counter() - t0:.1f} s")
    t_eager = None
    if not args.no_eager:
        from headlab.engine.hf import attach
        from headlab.measure.stats import forward_for_attention
        from headlab.probes.base import Probe

        class Noop(Probe):  # a probe without a fast path: forces the chunked eager engine, keeps nothing
            name = "noop"

            def update(self, a, ctx):
                pass

        x = torch.tensor([res.token_ids[0][0].tolist()])

        def eager_once() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode(), attach(model, probes=[Noop()]):
                forward_for_attention(model, x)
            return time.perf_counter() - t0

        t_eager = eager_once()
        print(f"reference: one chunked-eager forward with a no-op probe: {t_eager:.1f} s")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    page = write_html_report(out, model=model, tokenizer=tok, texts=[text], max_map_px=args.max_map_px)
    t_maps = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if t_eager is not None:  # again after, so that warm-up and load changes do not favour either side
        t2 = eager_once()
        print(f"reference again (after the maps): {t2:.1f} s")
        t_eager = min(t_eager, t2)
    size = page.stat().st_size
    data = json.loads(page.read_text(encoding="utf-8").split('id="headlab-data">', 1)[1].split("</script>", 1)[0])
    heads = data["maps"]["texts"][0]["heads"]
    kinds = {k: sum(1 for v in heads.values() if v["kind"] == k) for k in ("detail", "overview")}
    L, H = res.meta["n_layers"], res.meta["n_heads"]
    full_bytes = L * H * n * n * 4
    print(
        f"report with maps (one streaming forward pass + encoding): {t_maps:.1f} s"
        + (f" = {t_maps / t_eager:.2f}x the faster no-op eager forward" if t_eager else "")
        + f"; peak RSS {rss0:.0f} -> {rss1:.0f} MB"
    )
    print(
        f"maps: {kinds['detail']} detail heads ({min(n, args.max_map_px)}px + top-{data['maps']['topk']} keys/query), "
        f"{kinds['overview']} overview heads ({data['maps']['overview_px']}px)"
    )
    print(f"rule: {data['maps']['rule']}")
    print(
        f"index.html: {size / 1e6:.2f} MB  (all {L}x{H} full maps as float32 would be {full_bytes / 1e9:.1f} GB; "
        f"ratio {full_bytes / size:.0f}x)"
    )
    if not args.no_browser:
        t = browser_timing(page, ROOT / "test-artifacts" / "bench_report.png")
        print(f"chromium start: {t['browser_start_s']} s")
        for i, r in enumerate(t["runs"]):
            print(
                f"render run {i}: driver.get -> ready {r['get_wall_s']} s; domInteractive {r['dom_interactive_ms']} ms; "
                f"loadEventEnd {r['load_event_end_ms']} ms; page script {r['script_ms']} ms; ready={r['ready']}"
            )
        if "select_head_s" in t:
            print(f"select another detailed head: {t['select_head_s']} s")
    print(f"folder: {out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
