"""Executors: who runs a run's tasks. Each is a file of its own over the same shared pieces.

- ``base``: a run's life (claim the output folder, merge stats, write the manifest);
- ``build``: the models, engine and steps a worker builds once;
- ``process``: one task from its input blocks to its shards and checkpoints;
- ``local``: tasks one after another in this process (``--workers``, ``--rank``);
- ``ray``: tasks spread over Ray actors, each owning one engine (``--executor ray``).
"""

from __future__ import annotations

from ..config import RunConfig
from ..engine import ChatEngine
from .base import RunResult
from .process import Interrupted

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "Interrupted", "RunResult", "run_generate"]


def run_generate(
    config: RunConfig,
    engine: ChatEngine | None = None,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    executor: str = "local",
    ray_options=None,
) -> RunResult:
    """Generate into ``config.output.out_dir`` with the chosen executor; rerun to resume."""
    if executor == "local":
        from .local import run_local

        return run_local(config, engine, rank, world_size, overwrite)
    if executor == "ray":
        from .ray import RayOptions, run_ray

        return run_ray(config, ray_options or RayOptions(), engine=engine, overwrite=overwrite)
    raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
