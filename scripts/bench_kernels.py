#!/usr/bin/env python
"""Run the block-sparse kernel benchmark (same as `headlab bench kernels`); writes headlab-report/bench-kernels/ by default
(the registered result: `headlab reproduce bench-kernels --out results/bench-kernels`).

OMP_WAIT_POLICY=PASSIVE python scripts/bench_kernels.py --tokens 8192 --threads 2
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts

if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from headlab.cli.bench import app as bench_app

    bench_app(["kernels", *sys.argv[1:]])
