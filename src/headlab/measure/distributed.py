"""``headlab scan --ray``: the texts of a scan fanned out over a Ray cluster, states merged exactly.

Each Ray task loads the model itself (``loader(model_name)``, e.g. ``functools.partial(headlab.load,
device="cuda")``; it must pickle), scans shard i of n of the texts (``scan_part``) and returns its float64 sums and counts; the
driver merges them with ``merge_parts``, which checks that every task saw the same model, metrics,
texts and headlab version. Needs ``pip install 'headlab[ray]'``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from .shard import ScanPart, merge_parts

#: seconds to wait for a Ray address to answer before giving up
CONNECT_TIMEOUT = 10.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the ray package: pip install 'headlab[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise ValueError naming ``address`` unless its host:port accepts a TCP connection within
    ``timeout`` s (``auto`` is left to Ray, which looks for a cluster started on this machine)."""
    if address == "auto":
        return
    split = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = split.hostname, split.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ValueError(f"Ray address {address!r} must be HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(
            f"Ray address {address!r} does not answer ({exc.__class__.__name__}: {exc}) within {timeout:g} s; "
            "start a cluster with `ray start --head` or leave out the address for a local Ray"
        ) from None


def connect(address: str | None = None, num_cpus: int | None = None, timeout: float = CONNECT_TIMEOUT):
    """The ray module, connected: to ``address``, to the Ray this process already joined, or to a local
    Ray started here (``num_cpus`` CPUs, default all)."""
    ray = _import_ray()
    if address is not None:
        check_address(address, timeout)
    if ray.is_initialized():
        return ray
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"--ray-cpus must be >= 1, got {num_cpus}")
    if address is not None:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise ValueError(f"Ray address {address!r} did not accept this driver: {exc}") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def _scan_task(
    loader: Callable,
    model_name: str,
    texts: list[str],
    metrics: list[str],
    shard: tuple[int, int],
    scan_kwargs: dict,
    drop_retrieval: bool,
) -> dict:
    """One Ray task: load the model, scan shard ``i/n`` of ``texts``, return the partial as JSON."""
    from .scan import scan_part

    model, tok = loader(model_name)
    if drop_retrieval and not hasattr(model, "lm_head"):
        metrics = [m for m in metrics if m != "retrieval"]
    return scan_part(model, tok, model_name, texts, metrics, shard=shard, **scan_kwargs).to_json()


def ray_scan(
    loader: Callable,
    model_name: str,
    texts: list[str],
    metrics: list[str],
    address: str | None = None,
    num_cpus: int | None = None,
    n_tasks: int | None = None,
    drop_retrieval: bool = False,
    timeout: float = CONNECT_TIMEOUT,
    **scan_kwargs,
) -> ScanPart:
    """The merged state of a scan of ``texts`` with the model ``loader(model_name)`` returns (model,
    tokenizer), run as ``n_tasks`` Ray tasks (default: one per CPU of
    the cluster, at most one per text), each on a contiguous share of the texts. ``scan_kwargs`` go
    to ``scan_part`` (max_tokens, prefix, edits, batch_size, retrieval_lengths)."""
    if not texts:
        raise ValueError("--ray needs at least one text")
    ray = _import_ray()
    started = not ray.is_initialized()
    ray = connect(address, num_cpus, timeout)
    try:
        return _fan_out(ray, loader, model_name, texts, metrics, n_tasks, drop_retrieval, scan_kwargs)
    finally:
        if started:  # a Ray this call started or joined ends with it
            ray.shutdown()


def _fan_out(ray, loader, model_name, texts, metrics, n_tasks, drop_retrieval, scan_kwargs) -> ScanPart:
    if n_tasks is None:
        n_tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    n = min(n_tasks, len(texts))
    task = ray.remote(num_cpus=1)(_scan_task)
    texts_ref = ray.put(list(texts))
    refs = [
        task.remote(loader, model_name, texts_ref, list(metrics), (i, n), scan_kwargs, drop_retrieval) for i in range(1, n + 1)
    ]
    try:
        results = ray.get(refs)
    except Exception as exc:  # a task's ValueError arrives wrapped in a RayTaskError
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ValueError):
            raise ValueError(str(cause)) from None
        raise
    parts = [ScanPart.from_json(r, where=f"Ray task {k + 1}/{n}") for k, r in enumerate(results)]
    return merge_parts(parts, [f"Ray task {k + 1}/{n}" for k in range(n)])
