"""Executors: who runs a run's tasks. Each is a file of its own over the same lifecycle.

- ``base``: ``Executor``, a run's life (open the folder, run the tasks, finalize stats,
  manifest and card), the progress bar and interruption handling;
- ``workbench``: the embedder, engine and steps a worker builds once, from the plan's recipe;
- ``task``: one task from its input blocks to its shards and checkpoints;
- ``local``: tasks one after another in this process (``--rank``), and ``--workers``;
- ``ray``: tasks spread over Ray actors, each owning one engine (``--executor ray``).
"""

from __future__ import annotations

from ..config import RunConfig
from ..engine import ChatEngine
from ..run.plan import EXECUTORS, RayOptions, RunPlan, resolve_plan
from .base import Executor, Interrupted, RunResult

__all__ = ["EXECUTORS", "Executor", "Interrupted", "RunResult", "execute", "run_generate"]


def execute(plan: RunPlan, engine: ChatEngine | None = None) -> RunResult:
    """Run the plan with its executor (``--workers`` first launches the worker processes)."""
    if plan.executor == "ray":
        from .ray import RayExecutor

        return RayExecutor(plan, engine).run()
    from .local import LocalExecutor, launch_workers

    if plan.workers > 1:
        launch_workers(plan)  # then the pass below only merges what the workers wrote
        plan.overwrite = False
    return LocalExecutor(plan, engine).run()


def run_generate(
    config: RunConfig,
    engine: ChatEngine | None = None,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    executor: str = "local",
    ray_options: RayOptions | None = None,
    workers: int = 1,
    verbose: bool = False,
    accept_corpus_change: bool = False,
) -> RunResult:
    """Generate into ``config.output.out_dir`` with the chosen executor; rerun to resume.

    The one entry into a run: ``synth generate`` and ``synth regate`` call it with their flags,
    the tests and the benches with theirs (and a fake ``engine`` where they need one).
    """
    plan = resolve_plan(
        config,
        rank=rank,
        world_size=world_size,
        executor=executor,
        ray=ray_options,
        workers=workers,
        overwrite=overwrite,
        verbose=verbose,
        accept_corpus_change=accept_corpus_change,
    )
    return execute(plan, engine)
