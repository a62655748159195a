"""The local executor: this process runs its share of the tasks one after another on one engine.

``--rank/--world-size`` lets a scheduler (a Slurm array) start one process per share;
tasks ``t % world_size == rank`` are this process's. ``--workers N`` does the same on
one machine: ``launch_workers`` starts N processes (one GPU each when present) over the
run's resolved ``config.yaml``, waits for them, and the calling process then finalizes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from ..engine.batch_engine import RepliesPending
from ..engine.factory import get_engine
from ..readers.passages import open_input
from ..run.budget import BUDGET_EXIT
from ..run.folder import TaskState
from ..run.plan import RunPlan
from .base import Executor, OnChunk, StopFlag
from .task import run_task
from .workbench import Workbench

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    def prepare(self, todo: list[TaskState]) -> None:
        """A served generator: connect first (the server names the model; an unreachable one fails fast)."""
        plan = self.plan
        if plan.models.remote:
            if self.engine is None:
                self.engine = get_engine(
                    plan.models.generator, plan.config.models, plan.config.seed, plan.folder.batch_folder
                )
            plan.serve(self.engine.model_name)

    def run_tasks(self, todo: list[TaskState], on_chunk: OnChunk, stop: StopFlag) -> None:
        corpus = self.corpus  # opened by Executor.run
        bench = Workbench.build(self.plan, corpus, self.engine)
        waiting = None  # every task writes its requests into the round before the run stops
        try:
            for state in todo:
                try:
                    run_task(
                        state,
                        self.plan,
                        corpus,
                        bench.steps,
                        bench.count_tokens,
                        on_chunk=on_chunk,
                        stop_requested=lambda: stop.requested,
                    )
                except RepliesPending as exc:
                    waiting = waiting or exc
            if waiting is not None:
                raise waiting
        finally:  # the engine starts on the first reply the cache lacks: its figures come last
            self.timings.update(bench.timings)
            self.engine_info = bench.engine_info
            bench.close()


class WorkersFailed(RuntimeError):
    """Some ``--workers`` processes exited with an error; their finished chunks are saved."""


def launch_workers(plan: RunPlan) -> None:
    """Run ``plan.workers`` processes, rank k of them over the run's own ``config.yaml``, and wait.

    The folder is opened first (so ``config.yaml`` is the resolved configuration and
    ``--overwrite`` has happened once, here); each worker is ``synth generate --config
    OUT/config.yaml --rank k --world-size N``. With GPUs, worker k sees only GPU
    k % count (CUDA_VISIBLE_DEVICES), so each runs its own engine on its own device.
    """
    from ..models import has_cuda

    corpus = open_input(plan.config).identity(plan.split.num_tasks)
    plan.folder.open(plan.record, plan.overwrite, corpus, plan.accept_corpus_change)
    gpus = 0
    if has_cuda():
        import torch

        gpus = torch.cuda.device_count()
    children = []
    for k in range(plan.workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
        command = [sys.executable, "-m", "pipeline.cli", "generate", "--config", str(plan.folder.config_file)]
        command += ["--rank", str(k), "--world-size", str(plan.workers)]
        if plan.verbose:
            command.append("--verbose")
        children.append(subprocess.Popen(command, env=env))
    codes = [child.wait() for child in children]
    # a worker the budget stopped is not a failure: the pass after this one says so
    failed = [k for k, code in enumerate(codes) if code not in (0, BUDGET_EXIT)]
    if failed:
        raise WorkersFailed(f"worker(s) {failed} failed; rerun the same command to resume")
