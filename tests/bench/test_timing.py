"""headlab.timing, the one timing protocol (warm-up, alternating order, medians and ranges, load), and
headlab.progress, the one progress display (stderr, or nothing)."""

from __future__ import annotations

import pytest

from headlab import timing
from headlab.progress import progress_bar


def test_alternate_warms_up_then_alternates_and_reverses(fake_clock):
    clock = fake_clock
    ran = []
    costs = {"a": 1.0, "b": 3.0}

    def call(name):
        def fn():
            ran.append(name)
            clock.t += costs[name]
            return name.upper()

        return fn

    seen = []
    t = timing.alternate({"a": call("a"), "b": call("b")}, 3, on_sample=lambda r, n, w, c: seen.append((r, n, w, c)))
    assert ran == ["a", "b", "a", "b", "b", "a", "a", "b"]  # one warm-up each, then a b | b a | a b
    assert t.runs == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")] == [(r, n) for r, n, _, _ in seen]
    assert t.wall == {"a": [1.0, 1.0, 1.0], "b": [3.0, 3.0, 3.0]} and t.cpu["b"] == [1.5, 1.5, 1.5]
    assert t.ratios("b", "a") == [3.0, 3.0, 3.0] and t.median("b") == 3.0 and t.range("a") == (1.0, 1.0)
    assert t.last == {"a": "A", "b": "B"} and t.as_dict()["a"] == {"wall": [1.0] * 3, "cpu": [0.5] * 3}
    ran.clear()
    timing.alternate({"a": call("a"), "b": call("b")}, 2, warmup=0, reverse=False)
    assert ran == ["a", "b", "a", "b"]
    with pytest.raises(ValueError, match="repeats"):
        timing.alternate({"a": call("a")}, 0)


def test_order_spread_and_load():
    assert list(timing.order([1, 2, 3], 0)) == [1, 2, 3] and list(timing.order([1, 2, 3], 1)) == [3, 2, 1]
    assert list(timing.order([1, 2, 3], 1, reverse=False)) == [1, 2, 3]
    assert timing.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    load = timing.load_average()
    assert timing.load_text() == ("?" if load is None else " / ".join(f"{x:.1f}" for x in load))


def test_progress_bar_writes_to_stderr_only_and_is_silent_when_quiet(capsys):
    with progress_bar("work", 3, transient=False) as bar:
        bar()
        bar(2)
        line = bar.task("more", total=1)
        line.update(1, 1, "more done")
    out = capsys.readouterr()
    assert out.out == "" and "work" in out.err
    with progress_bar("work", 3, quiet=True) as bar:
        bar()
        bar.update(2, 3, "x")
        bar.task("more")(1)
    assert capsys.readouterr() == ("", "")
