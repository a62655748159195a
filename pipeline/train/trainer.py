"""Fine-tuning an embedding model on the pipeline's Parquet shards.

Rows are streamed from ``OUT/data/*.parquet``. A batch never holds the same text twice:
a duplicate would sit among the in-batch negatives of its own twin (a false negative), so
a row whose query, positive or negatives are already in the batch waits for the next one.
AdamW with linear warmup and decay; checkpoints load in transformers and sentence-transformers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import torch

from .. import schema as S
from ..generate.instructions import format_query
from ..run.shards import data_shards
from .config import TrainConfig
from .encoder import Encoder
from .losses import ImprovedInfoNCE, MatryoshkaLoss, cached_backward

log = logging.getLogger(__name__)


def stream_rows(data: Path) -> Iterator[dict]:
    for shard in data_shards(Path(data)):
        for batch in pq.ParquetFile(shard).iter_batches(
            batch_size=256, columns=[S.QUERY, S.POSITIVE, S.NEGATIVES, S.INSTRUCTION]
        ):
            yield from batch.to_pylist()


def count_rows(data: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in data_shards(Path(data)))


def batches_without_duplicates(rows: Iterator[dict], size: int, negatives: int) -> Iterator[list[dict]]:
    """Fill batches greedily; rows that would repeat a text in the current batch wait for a later one."""
    waiting: list[dict] = []
    rows = iter(rows)
    exhausted = False
    while not exhausted or waiting:
        batch, texts, still_waiting = [], set(), []
        for row in waiting:
            row_texts = {row[S.QUERY], row[S.POSITIVE], *row[S.NEGATIVES][:negatives]}
            if len(batch) < size and not row_texts & texts:
                batch.append(row)
                texts |= row_texts
            else:
                still_waiting.append(row)
        waiting = still_waiting
        while len(batch) < size and not exhausted:
            row = next(rows, None)
            if row is None:
                exhausted = True
                break
            if len(row[S.NEGATIVES]) < negatives:
                continue  # a row without enough negatives cannot fill the (N, K) tensor
            row_texts = {row[S.QUERY], row[S.POSITIVE], *row[S.NEGATIVES][:negatives]}
            if row_texts & texts:
                waiting.append(row)
            else:
                batch.append(row)
                texts |= row_texts
        if not batch:
            break  # only rows that clash with each other are left; one batch more would repeat texts
        yield batch


def training_batches(data: Path, size: int, negatives: int) -> Iterator[list[dict]]:
    """One epoch's batches; a last batch under ``max(2, size // 4)`` rows is dropped, and logged.

    Such a batch holds too few in-batch negatives to teach anything (a one-row batch without
    hard negatives has a loss of exactly 0) while taking a full step of the schedule.
    """
    minimum = max(2, size // 4)
    previous, yielded = None, 0
    for batch in batches_without_duplicates(stream_rows(data), size, negatives):
        if previous is not None:
            yield previous
            yielded += 1
        previous = batch
    if previous is None:
        return
    if yielded and len(previous) < minimum:
        log.info("dropped the last batch of the epoch: %d rows, fewer than %d", len(previous), minimum)
        return
    yield previous


def warmup_then_linear_decay(optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly for ``warmup`` steps, then falling linearly to 0 at ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / max(1, warmup)
            if step < warmup
            else max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        ),
    )


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def save_checkpoint(encoder: Encoder, source: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(target, safe_serialization=True)
    encoder.tokenizer.save_pretrained(target)
    # keep the sentence-transformers description of the source model, so ST loads the result as it did
    for name in (
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling",
    ):
        item = Path(source) / name
        if item.is_dir():
            shutil.copytree(item, target / name, dirs_exist_ok=True)
        elif item.exists():
            shutil.copy2(item, target / name)


def _step(encoder: Encoder, loss_fn, config: TrainConfig, queries, positives, flat) -> torch.Tensor:
    """One batch's loss, its gradients accumulated (gradient caching over mini-batches, or one pass)."""
    if config.mini_batch:
        groups = {"q": _chunks(queries, config.mini_batch), "p": _chunks(positives, config.mini_batch)}
        if flat:
            groups["n"] = _chunks(flat, config.mini_batch)
        return cached_backward(
            lambda texts: encoder(encoder.tokenize(texts)), groups, loss_fn, k=config.negatives
        )
    q = encoder(encoder.tokenize(queries))  # (N, d)
    p = encoder(encoder.tokenize(positives))  # (N, d)
    n = None
    if flat:
        n = encoder(encoder.tokenize(flat)).reshape(len(queries), config.negatives, -1)  # (N, K, d)
    loss = loss_fn(q, p, n)
    loss.backward()
    return loss


def train(data: Path, model_path: str, out: Path, config: TrainConfig) -> list[float]:
    """Fine-tune ``model_path`` on the shards in ``data``; returns the loss of every step."""
    torch.manual_seed(config.seed)
    encoder = Encoder(model_path, max_length=config.max_length)
    encoder.train()
    device = encoder.device
    # bfloat16 autocast where the GPU computes it natively; float32 elsewhere
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    log.info("training on %s%s", device, " with bfloat16 autocast" if bf16 else "")
    use_instruction = encoder.pooling == "last" if config.instruction is None else config.instruction
    loss_fn: torch.nn.Module = ImprovedInfoNCE(temperature=config.temperature)
    if config.matryoshka_dims:
        loss_fn = MatryoshkaLoss(loss_fn, list(config.matryoshka_dims))
    rows = count_rows(data)
    # the batches themselves, not rows / batch_size: rows that would repeat a text in a batch wait
    # for a later one, so there are often more batches, and the schedule must end at the last one
    per_epoch = sum(1 for _ in training_batches(data, config.batch_size, config.negatives))
    total_steps = max(1, per_epoch * config.epochs)
    warmup = int(total_steps * config.warmup_ratio)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr)
    schedule = warmup_then_linear_decay(optimizer, total_steps, warmup)
    losses: list[float] = []
    for epoch in range(config.epochs):
        for batch in training_batches(data, config.batch_size, config.negatives):
            queries = [format_query(r[S.QUERY], r[S.INSTRUCTION] if use_instruction else None) for r in batch]
            positives = [r[S.POSITIVE] for r in batch]
            flat = [neg for r in batch for neg in r[S.NEGATIVES][: config.negatives]]
            optimizer.zero_grad()
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                loss = _step(encoder, loss_fn, config, queries, positives, flat)
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if len(losses) % config.log_every == 0 or len(losses) == 1:
                log.info("epoch %d step %d/%d loss %.4f", epoch, len(losses), total_steps, losses[-1])
    save_checkpoint(encoder, model_path, out)
    summary = {
        "config": {**asdict(config), "model": str(model_path), "data": str(data)},
        "device": str(device),
        "bf16": bf16,
        "losses": losses,
        "rows": rows,
        "steps": len(losses),
        "planned_steps": total_steps,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=2))
    return losses
