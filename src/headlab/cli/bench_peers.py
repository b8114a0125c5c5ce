"""``headlab bench peers``: headlab against transformers' eager maps, TransformerLens and nnsight — per-head
statistics at several lengths and activation patching of every head — each configuration in its own fresh
process, parity before speed. Registered on the ``bench`` group by ``headlab.cli.bench``; see
:mod:`headlab.bench.peers`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from . import _common as C


def _ioi(folder: Path, prompts: int, seed: int) -> dict:
    """IOI prompt pairs of one template (every row the same token length: no padding for any tool)."""
    from transformers import AutoTokenizer

    from ..circuits.ioi import TEMPLATES, make_ioi

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    task = make_ioi(tok, prompts, seed=seed, templates=[TEMPLATES[0]])
    if not bool(task.mask.all()):
        raise ValueError("the IOI prompts of one template differ in token length for this tokenizer; patching needs no padding")
    return {
        "clean": task.clean_ids.tolist(),
        "corrupt": task.corrupt_ids.tolist(),
        "answer": task.answer.tolist(),
        "distractors": task.distractors.tolist(),
        "texts": task.clean_texts,
    }


def peers_cmd(
    lengths: str = typer.Option("512,2048,8192", help="comma-separated sequence lengths of the statistics task"),
    repeats: int = typer.Option(5, help="alternating rounds; every configuration runs in a fresh process per round"),
    peers: str = typer.Option(
        "eager,tl,tl-bridge,nnsight",
        help="comma list of the peers: eager (transformers output_attentions), tl (TransformerLens HookedTransformer), "
        "tl-bridge (TransformerLens TransformerBridge), nnsight",
    ),
    peers_python: Path = typer.Option(
        Path("build/peers-venv/bin/python"),
        "--peers-python",
        help="python of the peers' venv (made by `bash scripts/peers_env.sh build/peers-venv`); eager runs in headlab's own",
    ),
    prompts: int = typer.Option(8, help="IOI prompt pairs of the patching task (0: no patching task)"),
    seed: int = typer.Option(0, help="seed of the IOI prompts"),
    model: str = C.model_option(),
    threads: int = C.threads_option(),
    out: Path = C.out_option(C.REPORT / "bench-peers", "output folder (peers.json, records, table.md, peers.png)"),
    json_out: bool = C.json_option(),
    quiet: bool = C.quiet_option(),
):
    """headlab vs TransformerLens, nnsight and eager maps: per-head statistics and head patching, parity first."""
    from rich.console import Console

    from ..bench import peers as P

    n = C.split_list(lengths, "--lengths", int)
    if not n or min(n) < 2:
        raise typer.BadParameter(f"--lengths must list integers >= 2, got {lengths!r}")
    if repeats < 1:
        raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}")
    if prompts < 0:
        raise typer.BadParameter(f"--prompts must be >= 0 (0: no patching task), got {prompts}")
    names = C.split_list(peers, "--peers")
    bad = [p for p in names if p not in P.PEERS]
    if bad or len(set(names)) != len(names):
        raise typer.BadParameter(f"--peers {peers!r}: give distinct names among {', '.join(P.PEERS)}")
    C.check_out_folder(out)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        C.note("note: set OMP_WAIT_POLICY=PASSIVE before starting for stable timings on a shared machine")
    console = Console(stderr=True, quiet=quiet)
    folder = P.model_folder(model)
    ioi = _ioi(folder, prompts, seed) if prompts else None
    avail = P.probe_peers(names, peers_python)
    for p, a in avail.items():
        if a["status"] != "ok":
            C.note(f"{p}: missing ({a.get('why', '')}); install: {a.get('install', '')}")
    with console.status("starting") as status:

        def tick(msg: str) -> None:  # one line per step (a run is long), above the status line
            status.update(msg)
            console.print(f"{time.strftime('%H:%M:%S')} {msg}", soft_wrap=True, highlight=False, markup=False)

        res = P.run(folder, n, repeats, names, peers_python=peers_python, threads=threads, ioi=ioi, availability=avail, tick=tick)
    res["config"]["model_name"] = model
    res["config"]["seed"] = seed
    cmd = (
        f"headlab bench peers --lengths {','.join(map(str, n))} --repeats {repeats} --peers {','.join(names)} "
        f"--prompts {prompts} --seed {seed} --model {model} --threads {threads}"
        + ("" if peers_python == P.DEFAULT_PEERS_PYTHON else f" --peers-python {peers_python}")
        + f" --out {out}"
    )
    P.write(res, out, cmd)
    typer.echo(json.dumps(P.finite(res), default=str) if json_out else P.table(res))
    C.note(f"wrote {out}/peers.json, peers.records.jsonl, table.md, peers.png")
