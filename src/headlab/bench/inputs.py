"""Shared inputs of the kernel benchmarks (``headlab bench kernels`` and scripts/bench_*.py):
seeded random q/k/v, and the scripts' common ``--tokens/--repeats/--threads`` options."""

from __future__ import annotations

import argparse

import torch


def random_qkv(T: int, H: int = 9, Hkv: int = 3, d: int = 64, seed: int = 0):
    """q (1,H,T,d), k/v (1,Hkv,T,d), fp32 standard normal from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, H, T, d, generator=g), torch.randn(1, Hkv, T, d, generator=g), torch.randn(1, Hkv, T, d, generator=g))


def script_args(doc: str | None) -> argparse.Namespace:
    """Parse ``--tokens`` (8192), ``--repeats`` (3), ``--threads`` (0 = torch's default) and set torch's thread count."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = ap.parse_args()
    if a.threads < 0:
        ap.error(f"--threads must be >= 0 (0 = torch's default), got {a.threads}")
    if a.threads:
        torch.set_num_threads(a.threads)
    return a
