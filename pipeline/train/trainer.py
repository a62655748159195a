"""Fine-tuning an embedding model on the pipeline's Parquet shards, with sentence-transformers' trainer.

Rows stream from ``OUT/data/*.parquet`` into an Arrow dataset on disk (memory-mapped: nothing
grows with the run in memory) with the columns ``anchor`` (the query, with its instruction for
decoder models), ``positive`` and ``negative_1`` ... ``negative_K``. ``SentenceTransformerTrainer``
trains on it with:

- the paper's improved InfoNCE (``losses/trainer_loss.py``), cached (GradCache) with
  ``mini_batch``, inside sentence-transformers' ``MatryoshkaLoss`` with ``matryoshka_dims``;
- the no-duplicates batch sampler: a batch never holds the same text twice, since a duplicate
  would be an in-batch negative of its own twin;
- AdamW with linear warmup and decay, gradient accumulation, bf16/fp16 where the GPU has it,
  checkpoints every ``save_every`` steps in ``OUT/checkpoints`` and ``resume``;
- every process of ``torchrun`` / ``accelerate launch`` on its own GPU (gloo on CPUs), in-batch
  negatives gathered across them.

The result loads in sentence-transformers and transformers; ``training_log.json`` beside it
holds the whole config, the device, the loss of every step and the throughput.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from .. import schema as S
from ..instructions import format_query
from ..run.folder import shards_under
from .config import TrainConfig
from .device import best_device
from .encoder import is_decoder
from .lifecycle import (
    RecordsStepLosses,
    StepLosses,
    examples_on_disk,
    resume_point,
    train_to_the_end,
    trainer_arguments,
)

log = logging.getLogger(__name__)


def stream_rows(data: Path) -> Iterator[dict]:
    for shard in shards_under(Path(data)):
        for batch in pq.ParquetFile(shard).iter_batches(
            batch_size=256, columns=[S.QUERY, S.POSITIVE, S.NEGATIVES, S.INSTRUCTION]
        ):
            yield from batch.to_pylist()


def sentence_model(model_path: str, max_length: int):
    """The model as a SentenceTransformer: its own modules when it has them, else built here.

    A plain transformers checkpoint gets last-token pooling when it is a decoder (Qwen3
    Embedding's recipe; right padding, so positions start at 0 and the pooling finds the last
    real token), mean pooling otherwise, then L2 normalisation. Texts reach it as plain text, never
    through the tokenizer's chat template, as the evaluation encoder reads them.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    device = str(best_device())
    folder = Path(model_path)
    if folder.is_dir() and not (folder / "modules.json").exists():
        # text only: a tokenizer with a chat template would otherwise wrap every text in a chat turn
        transformer = Transformer(
            model_path,
            max_seq_length=max_length,
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        decoder = is_decoder(transformer.auto_model.config)
        if decoder:
            transformer.tokenizer.padding_side = "right"
            if transformer.tokenizer.pad_token is None:
                transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
        dimension = transformer.get_embedding_dimension()
        pooling = Pooling(dimension, "lasttoken" if decoder else "mean")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)
    else:
        model = SentenceTransformer(model_path, device=device)
    model.max_seq_length = max_length
    return model


def _pooling(model) -> str:
    modes = [getattr(m, "pooling_mode", None) for m in model.children()]
    return next((m for m in modes if isinstance(m, str)), "mean")


def _ends_with_eos(model) -> bool:
    """Whether the tokenizer appends the end-of-text token itself (last-token pooling reads it)."""
    tokenizer = model.tokenizer
    ids = tokenizer("a")["input_ids"]
    return tokenizer.eos_token_id is not None and bool(ids) and ids[-1] == tokenizer.eos_token_id


def training_examples(data: Path, negatives: int, instruction: bool, eos: str = "") -> Iterator[dict]:
    """The trainer's columns for every row with at least ``negatives`` hard negatives.

    ``instruction``: queries read ``Instruct: {task}\\nQuery:{query}`` (decoder models);
    ``eos``: appended to every text (last-token pooling of a tokenizer that does not add it).
    """
    for row in stream_rows(data):
        if len(row[S.NEGATIVES]) < negatives:
            continue  # a row without enough negatives cannot fill its negative columns
        query = format_query(row[S.QUERY], row[S.INSTRUCTION] if instruction else None)
        example = {"anchor": query + eos, "positive": row[S.POSITIVE] + eos}
        for k, negative in enumerate(row[S.NEGATIVES][:negatives], 1):
            example[f"negative_{k}"] = negative + eos
        yield example


def training_loss(model, config: TrainConfig):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    from .losses.trainer_loss import ImprovedInfoNCELoss

    loss = ImprovedInfoNCELoss(model, temperature=config.temperature, mini_batch_size=config.mini_batch)
    if config.matryoshka_dims:
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=list(config.matryoshka_dims))
    return loss


def _prompts(model, instruction: bool, negatives: int) -> dict[str, str] | None:
    """The model's own query / document prompts per column (e5's "query: ", BGE's instruction...).

    Queries that carry the row's instruction get no prompt on top of it; None when no column has one.
    """
    from ..embed.embedder import prompt_name

    prompts = getattr(model, "prompts", None) or {}
    query, document = prompt_name(prompts, "query"), prompt_name(prompts, "passage")
    if instruction:
        query = None
    if not (query or document):
        return None
    columns = {"anchor": query, "positive": document}
    columns.update({f"negative_{k}": document for k in range(1, negatives + 1)})
    return {column: prompts[name] for column, name in columns.items() if name}


def train(data: Path, model_path: str, out: Path, config: TrainConfig, resume: bool = False) -> list[float]:
    """Fine-tune ``model_path`` on the shards in ``data``; returns the loss of every optimizer step.

    ``resume``: continue from the newest checkpoint in ``out/checkpoints`` (from the start if none).
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    out = Path(out)
    model = sentence_model(model_path, config.max_length)
    pooling = _pooling(model)
    use_instruction = pooling == "lasttoken" if config.instruction is None else config.instruction
    eos = model.tokenizer.eos_token if pooling == "lasttoken" and not _ends_with_eos(model) else ""
    columns = ["anchor", "positive", *(f"negative_{k}" for k in range(1, config.negatives + 1))]
    with examples_on_disk(
        out,
        training_examples,
        dict.fromkeys(columns, "string"),
        data=data,
        negatives=config.negatives,
        instruction=use_instruction,
        eos=eos,
    ) as dataset:
        if dataset is None:
            return []
        checkpoint = resume_point(out, resume)
        losses = StepLosses(resumed_from=checkpoint)

        class Trainer(RecordsStepLosses, SentenceTransformerTrainer):
            step_losses = losses

        arguments = SentenceTransformerTrainingArguments(
            **trainer_arguments(config, out, len(dataset)),
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            prompts=_prompts(model, use_instruction, config.negatives),
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            loss=training_loss(model, config),
            callbacks=[losses],
        )
        return train_to_the_end(
            trainer,
            out,
            checkpoint,
            losses,
            config,
            model=model_path,
            data=data,
            pooling=pooling,
            instruction=use_instruction,
            rows=len(dataset),
        )
