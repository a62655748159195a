"""The Ray executor: the run's tasks as a Ray Dataset, each run by an actor that owns one engine.

``synth generate --executor ray`` turns the unfinished tasks into a Dataset and
maps ``TaskActor`` over it with ``map_batches`` (an actor pool of ``--replicas``
actors, each holding ``--tensor-parallel`` GPUs on a GPU cluster). An actor
builds its ``Workbench`` (engine, embedder, the same steps as the local
executor) once, then runs each task it is handed with ``task.run_task``:
the task reads only its own input blocks, in parallel with the other actors,
and writes its shards and checkpoints into ``OUT`` exactly as the local
executor does. The driver streams one record per finished chunk back for the
progress bar; the lifecycle around it (folder, stats, manifest, card) is the
shared ``Executor``'s, so
``synth stats``, ``synth train`` and the rest read either executor's output.

Ray's own vLLM processor (``ray.data.llm``) was measured on CPU (see
docs/scaling.md): no faster per row, 40-55 s slower to start, and it needs the
``ray[llm]`` extra that pins a CUDA vLLM; an actor owning ``vllm.LLM`` needs no
workaround and keeps the steps, checkpoints and resume identical to the local
executor.

Needs ``pip install -e '.[ray]'`` (``make setup`` installs it). ``OUT``, the
corpus and the model folders must be reachable under the same paths from every
node (shared storage on a cluster).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from .. import console
from ..engine import ChatEngine
from ..readers.passages import open_input
from ..run.budget import BudgetReached
from ..run.folder import Lease, TaskState
from ..run.plan import RayOptions, RunPlan
from .base import Executor, OnChunk, StopFlag
from .task import run_task
from .workbench import (
    Workbench,
    cached,
    needs_domain_topics,
    needs_labels_from_engine,
    resolve_domain_topics,
    resolve_labels,
    token_counter,
)

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """Ray is not installed in this environment."""


class TaskActor:
    """One replica: builds its engine and steps once, then runs whole tasks handed to it."""

    def __init__(self, plan: RunPlan, engine: ChatEngine | None = None):
        started = time.perf_counter()
        self.plan = plan
        self.failure: Exception | None = None
        try:
            self.corpus = open_input(plan.config)
            self.bench = Workbench.build(plan, self.corpus, engine)
        except Exception as exc:
            # raised again from the first call: an error in a constructor reaches the driver only
            # as text inside ActorDiedError, one in a call keeps its type (a CorpusError stays one)
            self.failure = exc
            self.info = ""
            return
        self.start_seconds = time.perf_counter() - started
        self.info = "pending"  # sent with the first chunk's record: the engine may start only then

    def __call__(self, batch: dict[str, Any]):
        """For each task in the batch, one record per chunk as soon as its shards have landed.

        The task runs in a helper thread so that each chunk's record can be yielded
        (and reach the driver's progress bar) while the next chunk is generated.
        """
        if self.failure is not None:
            raise self.failure
        for task in batch["task"]:
            chunks: queue.Queue = queue.Queue()
            worker = threading.Thread(target=self._run, args=(int(task), chunks), daemon=True)
            worker.start()
            while (item := chunks.get()) is not _DONE:
                budget = ""
                if isinstance(item, BudgetReached):
                    # a clean stop, reported as a record: raising would abort the dataset and
                    # leave the other tasks' leases to time out before a resume may take them
                    budget, item = str(item), (0, 0)
                elif isinstance(item, BaseException):
                    worker.join()
                    raise item
                passages, rows = item
                info, self.info = self.info, ""  # the actor's start-up, reported once
                if info:
                    timings = {**self.bench.timings, "actor_start": self.start_seconds}
                    info = json.dumps({"engine": self.bench.engine_info, "timings": timings})
                yield {
                    "task": [int(task)],
                    "passages": [passages],
                    "rows": [rows],
                    "info": [info],
                    "budget": [budget],
                }
            worker.join()

    def _run(self, task: int, chunks: queue.Queue) -> None:
        try:
            run_task(
                self.plan.folder.task(task),
                self.plan,
                self.corpus,
                self.bench.steps,
                self.bench.count_tokens,
                on_chunk=lambda passages, rows: chunks.put((passages, rows)),
                # a replica restarted on another node may find the dead one's lease: wait it out
                lease_wait=Lease.seconds() + 60,
            )
        except BaseException as exc:  # handed to the yielding side, which raises it in Ray's task
            chunks.put(exc)
        finally:
            chunks.put(_DONE)


_DONE = object()


def connect(options: RayOptions) -> float:
    """Join the cluster at ``options.address``, or start a local Ray; reuse one already joined."""
    import ray

    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": options.show_worker_logs,  # engine logs stay in the session folder
        "logging_level": logging.INFO if options.show_worker_logs else logging.WARNING,
    }
    if options.address:
        kwargs["address"] = options.address
    elif options.temp_dir:
        kwargs["_temp_dir"] = str(Path(options.temp_dir).resolve())
    ray.init(**kwargs)
    return time.perf_counter() - started


def replica_resources(options: RayOptions, tensor_parallel: int) -> dict[str, float]:
    """What each actor asks Ray for: GPUs for its engine, CPUs for the CPU engine or the filters."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus:
        return {"num_gpus": tensor_parallel, "num_cpus": options.cpus_per_replica or 1}
    cpus = ray.cluster_resources().get("CPU", 1)
    return {"num_gpus": 0, "num_cpus": options.cpus_per_replica or max(1.0, cpus // options.replicas)}


def _propose_labels(plan: RunPlan) -> None:
    """What the generator is asked once per run, before the replicas start (they read the files):
    the classification labels, a domain run's topics."""
    from ..engine.factory import get_engine

    engine = cached(
        plan,
        lambda: get_engine(plan.models.generator, plan.config.models, plan.config.seed),
        plan.models.generator,
    )
    count_tokens = token_counter(plan.models.generator, local_only=plan.models.remote)
    resolve_labels(plan, engine, open_input(plan.config), count_tokens)
    resolve_domain_topics(plan, engine)


class RayExecutor(Executor):
    """Every unfinished task of the run on Ray actors; resume what a killed run left."""

    def __init__(self, plan: RunPlan, engine: ChatEngine | None = None):
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as exc:
            raise RayUnavailable(
                "--executor ray needs Ray Data: pip install -e '.[ray]' (make setup installs it)"
            ) from exc
        super().__init__(plan, engine)

    def context(self) -> contextlib.AbstractContextManager:
        # Ray's own lines (its C++ core worker's included) go to the run's log file; ours reach the terminal
        return console.quiet()

    def prepare(self, todo: list[TaskState]) -> None:
        self.timings["ray_start"] = connect(self.plan.ray)

    def run_tasks(self, todo: list[TaskState], on_chunk: OnChunk, stop: StopFlag) -> None:
        import ray
        import ray.data

        plan, options = self.plan, self.plan.ray
        resources = replica_resources(options, plan.config.models.tensor_parallel_size)
        log.info(
            "Ray: %d task(s) on %d replica(s), %s each; worker logs under %s",
            len(todo),
            options.replicas,
            resources,
            _session_dir(),
        )
        if (needs_labels_from_engine(plan) or needs_domain_topics(plan)) and self.engine is None:
            t = time.perf_counter()
            ray.get(ray.remote(**resources)(_propose_labels).remote(plan))
            self.timings["labels"] = time.perf_counter() - t

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts passages; Ray's would count tasks
        if not options.show_worker_logs:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items([{"task": s.task} for s in todo], override_num_blocks=len(todo))
        results = dataset.map_batches(
            TaskActor,
            fn_constructor_kwargs={"plan": plan, "engine": self.engine},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(options.replicas, len(todo))),
            # an actor lost with its process or node (OOM, pre-emption) is restarted, and the task it
            # held is run again: it resumes from its checkpoint, its lease taken over (Ray Data's own
            # defaults too; set here so that the exactly-once recovery does not hang on them)
            max_restarts=-1,
            max_task_retries=-1,
            **resources,
        )
        actor_timings: list[dict] = []
        budget = ""
        try:
            for record in results.iter_rows():
                budget = budget or record["budget"]
                on_chunk(record["passages"], record["rows"])
                if record["info"]:
                    info = json.loads(record["info"])
                    self.engine_info = self.engine_info or info["engine"]
                    actor_timings.append(info["timings"])
        except Exception as exc:
            # a replica's own error (a bad corpus row, an unreachable server) reaches the user as
            # itself, not wrapped in Ray's task and user-code exceptions
            raise _cause(exc) from None
        else:
            if budget:  # every task stopped at its next chunk boundary; all their leases are free
                raise BudgetReached(budget)
        finally:
            for key in ("load_embedder_and_tokenizer", "mining_pool", "engine_start", "actor_start"):
                values = [t[key] for t in actor_timings if key in t]
                if values:
                    self.timings[key] = max(values)  # the replicas start side by side


def _cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s chain that Ray did not raise itself."""
    chain, seen = [exc], {id(exc)}
    while True:
        current = chain[-1]
        following = getattr(current, "cause", None) or current.__cause__ or current.__context__
        if following is None or id(following) in seen:
            break
        chain.append(following)
        seen.add(id(following))
    return next((e for e in chain if not type(e).__module__.startswith("ray")), exc)


def _session_dir() -> str:
    try:
        from ray._private.worker import _global_node

        return os.path.join(_global_node.get_session_dir_path(), "logs")
    except Exception:  # private API: only used to point at the logs
        return "Ray's session folder"
