"""Tables list claims in one order, whichever claims module a program imports first (a test module that
imports ``kernel_claims`` directly must not reorder the README's tables)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import importlib, sys
first = sys.argv[1]
if first:
    importlib.import_module(first)
from headlab_repro.claims import all_claims
print("\\n".join(all_claims()))
"""


def _order(first: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CODE, first], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_claim_order_does_not_depend_on_import_order():
    plain = _order("")
    assert len(plain) > 20 and len(set(plain)) == len(plain)
    for first in ("headlab_repro.kernel_claims", "headlab_repro.steer_claims"):
        assert _order(first) == plain, first
    # within a module, claims keep their registration order (sinks before its redesign)
    assert plain.index("sinks") < plain.index("sinks-dormant") < plain.index("sinks-dormant-mlp")
