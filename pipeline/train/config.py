"""The settings of ``synth train`` and ``synth train-reranker``, and their defaults (the CLI reads them here).

Kept apart from the trainers so that the command line can show the defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32  # rows per step and process: with N processes the in-batch pool is N times this
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    negatives: int = 1  # hard negatives per row used by the loss (rows with fewer are left out)
    temperature: float = 0.05
    max_length: int = 256
    instruction: bool | None = None  # None: on for decoder models (Qwen3 style), off for encoder models
    matryoshka_dims: tuple[int, ...] = ()
    # > 0: gradient caching with mini-batches of this many texts (same loss and gradients as the
    # whole batch at once, activation memory of one mini-batch); 0: the whole batch in one pass
    mini_batch: int = 0
    # batches whose gradients are summed before one optimizer step; each batch still contrasts its
    # own rows only, so for a larger in-batch pool raise batch_size with mini_batch instead
    accumulate: int = 1
    save_every: int = 500  # optimizer steps between checkpoints in OUT/checkpoints (0: none)
    keep_checkpoints: int = 2  # the newest ones kept
    log_every: int = 10
    seed: int = 0


@dataclass
class RerankerConfig:
    epochs: int = 1
    batch_size: int = 16  # pairs per step and process
    lr: float = 1e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    negatives: int = 1  # "no" pairs per row
    max_length: int = 512
    accumulate: int = 1
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
