"""What the embedder and reranker trainers share: the Trainer's arguments, per-step losses,
checkpoints with ``--resume``, and ``training_log.json``.

Both trainers run on transformers' ``Trainer`` (the embedder through sentence-transformers'
``SentenceTransformerTrainer``), which brings accelerate: the device of each process, mixed
precision, gradient accumulation and DDP under ``torchrun`` / ``accelerate launch``. This module
decides those arguments once from a config and the device (``device.py``), records the loss of
every optimizer step (the Trainer itself only logs a mean every ``logging_steps``), and keeps
those losses in every checkpoint so that a resumed run reports the whole curve.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .. import faults
from .device import best_device, mixed_precision, world_size

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"  # under the output folder: checkpoint-<step>/ as the Trainer names them
LOSSES_FILE = "step_losses.json"  # in every checkpoint: the loss of each step so far


def trainer_arguments(config: Any, out: Path, rows: int) -> dict[str, Any]:
    """Keyword arguments of ``TrainingArguments`` shared by both trainers.

    ``rows``: training examples; a last short batch is dropped only when there is a full one.
    """
    device = best_device()
    precision = mixed_precision(device)
    return {
        "output_dir": str(out / CHECKPOINTS),
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.accumulate,
        "learning_rate": config.lr,
        "warmup_steps": config.warmup_ratio,  # transformers reads a value under 1 as a fraction of steps
        "lr_scheduler_type": "linear",
        "weight_decay": config.weight_decay,
        "max_grad_norm": 1.0,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": device.type == "cpu",
        # several processes without a GPU talk over gloo (the CPU test of the distributed path)
        "ddp_backend": "gloo" if device.type == "cpu" and world_size() > 1 else None,
        "dataloader_drop_last": rows >= config.batch_size * world_size(),
        "save_strategy": "steps" if config.save_every else "no",
        "save_steps": config.save_every or 500,
        "save_total_limit": config.keep_checkpoints,
        "logging_steps": config.log_every,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "log_level": "warning",
    }


@contextmanager
def examples_on_disk(out: Path, make: Callable[..., Iterator[dict]], columns: dict[str, str], **kwargs: Any):
    """What ``make(**kwargs)`` yields as an Arrow dataset with these ``{name: dtype}`` columns, written
    to a scratch folder under ``out`` (memory-mapped: nothing grows with the run in memory) and
    removed on exit; None when it yields nothing. Each process of a multi-process run has its own."""
    from datasets import Dataset, Features, Value

    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".examples-", dir=out))
    try:
        if not any(True for _ in make(**kwargs)):
            yield None
            return
        features = Features({name: Value(dtype) for name, dtype in columns.items()})
        yield Dataset.from_generator(make, gen_kwargs=kwargs, features=features, cache_dir=str(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def last_checkpoint(out: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder under ``out/checkpoints`` that holds its trainer state."""
    folder = out / CHECKPOINTS
    found = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


class StepLosses(TrainerCallback):
    """The loss of every optimizer step (the mean over its accumulated batches), kept in checkpoints.

    The trainer calls :meth:`add` with each training batch's loss; ``on_step_end`` closes a step.
    """

    def __init__(self, resumed_from: Path | None = None):
        self.losses: list[float] = []
        self._batches: list[torch.Tensor] = []
        if resumed_from is not None and (resumed_from / LOSSES_FILE).exists():
            self.losses = json.loads((resumed_from / LOSSES_FILE).read_text())

    def add(self, loss: torch.Tensor) -> None:
        self._batches.append(loss.detach().float())

    def on_step_end(self, args, state, control, **kwargs):
        if self._batches:
            self.losses.append(torch.stack(self._batches).mean().item())
            self._batches.clear()
            first_or_due = len(self.losses) == 1 or len(self.losses) % max(1, args.logging_steps) == 0
            if first_or_due and state.is_world_process_zero:
                log.info("step %d/%d loss %.4f", state.global_step, state.max_steps, self.losses[-1])

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / LOSSES_FILE).write_text(json.dumps(self.losses[: state.global_step]))
        # a process killed here leaves a whole checkpoint behind: --resume continues from it
        faults.crash_point("after_train_checkpoint")


class RecordsStepLosses:
    """Mixed into a Trainer class: every training batch's loss goes to its ``StepLosses`` callback."""

    step_losses: StepLosses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            self.step_losses.add(result[0] if isinstance(result, tuple) else result)
        return result


def resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint ``--resume`` continues from (None: start afresh, and say why when asked to resume)."""
    if not resume:
        return None
    found = last_checkpoint(out)
    if found is None:
        log.warning("no checkpoint under %s: training from the start", out / CHECKPOINTS)
    return found


def is_main_process() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def train_to_the_end(
    trainer, out: Path, checkpoint: Path | None, losses: StepLosses, config: Any, **details: Any
) -> list[float]:
    """Run ``trainer`` (from ``checkpoint`` when resuming), then :func:`finish`; the step losses.

    ``details``: what ``training_log.json`` says beside the config (model, data, pooling, rows...).
    """
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    summary = {
        "config": {**asdict(config), "model": str(details.pop("model")), "data": str(details.pop("data"))},
        **details,
        "resumed_from": checkpoint.name if checkpoint else None,
    }
    finish(trainer, out, summary, losses, result.metrics)
    return losses.losses


def finish(
    trainer, out: Path, summary: dict[str, Any], losses: StepLosses, metrics: dict[str, float]
) -> None:
    """Save the final model in ``out`` (main process), write ``training_log.json``, drop the checkpoints.

    ``metrics``: what ``Trainer.train`` returned (its run time and samples per second count this
    process's part only when the run was resumed). The checkpoints are removed once the final
    model is whole: they exist for ``--resume`` only.
    """
    trainer.save_model(str(out))
    if not is_main_process():
        return
    device = best_device()
    summary.update(
        {
            "device": str(device),
            "precision": mixed_precision(device) or "float32",
            "processes": world_size(),
            "losses": losses.losses,
            "steps": trainer.state.global_step,
            "planned_steps": trainer.state.max_steps,
            "seconds": round(metrics.get("train_runtime", 0.0), 2),
            "samples_per_second": round(metrics.get("train_samples_per_second", 0.0), 3),
        }
    )
    (out / "training_log.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
