"""The local executor: this process runs its share of the tasks one after another on one engine.

``--workers N`` starts N such processes (one GPU each when present) and
``--rank/--world-size`` lets a scheduler (a Slurm array) do the same; tasks
``t % world_size == rank`` are this process's.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from tqdm import tqdm

from .. import console
from ..config import RunConfig
from ..console import say
from ..engine import ChatEngine
from ..engine.factory import get_engine
from ..models import ResolvedModel
from .base import RunResult, finalize, open_run, result_of, tasks_to_do
from .build import Workbench, judge_enabled, resolve_models
from .process import limit_share, open_input, run_task

log = logging.getLogger(__name__)


class StopFlag:
    """First SIGINT/SIGTERM: finish the chunk in flight, then stop. Second: stop at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: finishing the current chunk (press Ctrl-C again to abandon it)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_local(
    config: RunConfig,
    engine: ChatEngine | None = None,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
) -> RunResult:
    """Run this process's share of the tasks into ``config.output.out_dir``; resume what is unfinished.

    Finished tasks are skipped, unfinished ones continue after their last finished
    chunk. When every task of the run is complete, the stats and manifest are merged.
    """
    started = time.perf_counter()
    out = open_run(config, overwrite)
    todo = tasks_to_do(out, config, rank, world_size)
    models = resolve_models(config)
    timings: dict[str, float] = {}
    engine_info: dict = {}
    if not todo:
        return result_of(out, finalize(out, config, models.generator, models.embedder, timings))
    if models.remote:  # connect first: the server names the model, and an unreachable one fails fast
        if engine is None:
            engine = get_engine(models.generator, config.models, config.seed)
        served = engine.model_name
        models.generator = ResolvedModel(path=models.generator.path or served, name=served)
    say(f"generator: {models.generator.name}")
    say(f"embedder: {models.embedder.name}")
    here = f"tasks to run here: {', '.join(s.name for s in todo)}"
    if config.output.num_tasks > 1:
        say(here)
    else:
        log.info(here)
    judge_enabled(config, models.generator)  # says once why the judge is off, if it is
    corpus = open_input(config)
    bench = Workbench.build(config, models, corpus, out, engine)
    timings.update(bench.timings)
    engine_info = bench.engine_info

    shares = [limit_share(config, state.task) for state in todo]
    total = sum(shares) if config.limit else None  # an upper bound: a task's blocks may hold fewer
    progress = tqdm(total=total, desc="passages", unit="passage", file=console.terminal)
    kept = [0]

    def on_chunk(passages: int, rows: int) -> None:
        kept[0] += rows
        progress.set_postfix(kept=kept[0], refresh=False)
        progress.update(passages)

    try:
        with StopFlag() as stop:
            for state in todo:
                run_task(
                    state,
                    config,
                    corpus,
                    bench.steps,
                    bench.count_tokens,
                    on_chunk=on_chunk,
                    stop_requested=lambda: stop.requested,
                )
    finally:  # also on a crash or interrupt: stats.json always reflects what is on disk
        progress.close()
        timings["total"] = time.perf_counter() - started
        stats = finalize(out, config, models.generator, models.embedder, timings, engine_info)
    return result_of(out, stats)
