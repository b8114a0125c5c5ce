"""Every claims module of the harness, imported in alphabetical order: importing this module registers every
claim (tables list claims by registering module, then registration order)."""

from . import (  # noqa: F401  (registration is the import's side effect)
    attribution_claims,
    bench_claims,
    carve_claims,
    circuits_claims,
    dominance_claims,
    exit_claims,
    guidance_claims,
    honest_claims,
    kernel_claims,
    kv_claims,
    lab_claims,
    mechanism_claims,
    paper_claims,
    peers_claims,
    plan_speed_claims,
    preplan_claims,
    replication_claims,
    sparsify_claims,
    steer_claims,
    steer_replication_claims,
)
