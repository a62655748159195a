"""``synth plan``: a pilot of the run in a scratch folder, then the projection for the whole run.

The pilot is the run itself (same steps, same engine, same gate; ``execute``) on a few dozen
passages; ``pipeline/run/projection.py`` turns its per-task stats into the run's figures.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..engine import ChatEngine
from ..run.plan import resolve_plan
from ..run.projection import PILOT_TASKS, InputCount, count_input, project
from ..run.stats import RunStats
from . import execute
from .workbench import token_counter


def pilot_config(config: RunConfig, pilot: int, scratch: Path) -> RunConfig:
    """The run's configuration on ``pilot`` passages, spread over tasks, into ``scratch``."""
    trial = config.model_copy(deep=True)
    trial.output.out_dir = str(scratch)
    trial.limit = min(pilot, config.limit) if config.limit else pilot
    trial.output.num_tasks = max(1, min(PILOT_TASKS, trial.limit // 4))
    trial.budget.tokens = trial.budget.engine_hours = None
    return trial


def plan_run(
    config: RunConfig,
    pilot: int = 32,
    engine: ChatEngine | None = None,
    scratch: str | None = None,
    prices: dict[str, float] | None = None,
    throughput: tuple[float, float, float, str] | None = None,
) -> tuple[dict[str, Any], InputCount]:
    """Run the pilot, count the input, project; the scratch folder is removed unless named."""
    folder = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="synth-plan-"))
    try:
        trial = resolve_plan(pilot_config(config, pilot, folder), overwrite=True)
        timings = execute(trial, engine).stats.timings
        tasks = [
            RunStats.from_json(state.load().stats or {})
            for state in trial.folder.tasks(trial.split.num_tasks)
        ]
        count_tokens = token_counter(trial.models.generator, local_only=trial.models.remote)
        count = count_input(config, count_tokens)
    finally:
        if not scratch:
            shutil.rmtree(folder, ignore_errors=True)
    run_passages = min(count.passages, config.limit) if config.limit else count.passages
    projection = project(tasks, run_passages, prices, throughput)
    projection["input"] = {"passages": count.passages, "exact": count.exact, "how": count.how}
    # once per corpus, not per passage: the mining pool (kept on disk) and the engine's start
    projection["fixed_seconds"] = {
        key: round(timings.get(key, 0.0), 1) for key in ("mining_pool", "engine_start", "total")
    }
    return projection, count
