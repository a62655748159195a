"""Fine-tuning a point-wise yes/no reranker (Qwen3-Reranker style) on the pipeline's shards.

Every row gives one relevant pair (query, positive) labelled "yes" and one pair per hard
negative labelled "no". The causal LM reads the paper's prompt (``reranker_prompt``) and is
trained with ``pointwise_reranker_loss`` on its next-token logits for "yes" and "no", left
padded so the last position is the answer position in every sequence. Training runs on
transformers' ``Trainer``: the same devices, precision, accumulation, checkpoints, ``--resume``
and processes as ``synth train`` (``lifecycle.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers

from .. import schema as S
from .config import RerankerConfig
from .lifecycle import (
    RecordsStepLosses,
    StepLosses,
    examples_on_disk,
    resume_point,
    train_to_the_end,
    trainer_arguments,
)
from .losses.reranker import (
    DEFAULT_INSTRUCTION,
    pointwise_reranker_loss,
    relevance_scores,
    reranker_prompt,
)
from .trainer import stream_rows

log = logging.getLogger(__name__)


class Reranker:
    """A causal LM that scores (query, document) pairs by p("yes")."""

    def __init__(self, model_path: str, max_length: int = 512):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32)
        self.max_length = max_length
        self.yes_id = self._single_token("yes")
        self.no_id = self._single_token("no")

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} tokens for this tokenizer; the reranker needs one")
        return ids[0]

    def last_logits(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        # left padding: position -1 is the answer position of every sequence
        return self.model(**batch).logits[:, -1, :]  # (B, V)

    @torch.no_grad()
    def score(self, pairs: list[tuple[str, str]], instruction: str = DEFAULT_INSTRUCTION) -> list[float]:
        prompts = [reranker_prompt(q, d, instruction) for q, d in pairs]
        return relevance_scores(self.last_logits(prompts), self.yes_id, self.no_id).tolist()


def labelled_pairs(data: Path, negatives: int) -> Iterator[dict]:
    """``{"prompt", "label"}`` for every row: the positive as 1, up to ``negatives`` negatives as 0."""
    for row in stream_rows(data):
        instruction = row.get(S.INSTRUCTION) or DEFAULT_INSTRUCTION
        yield {"prompt": reranker_prompt(row[S.QUERY], row[S.POSITIVE], instruction), "label": 1}
        for negative in row[S.NEGATIVES][:negatives]:
            yield {"prompt": reranker_prompt(row[S.QUERY], negative, instruction), "label": 0}


class PromptCollator:
    """Tokenizes a batch of prompts, left padded: position -1 is every sequence's answer position."""

    def __init__(self, reranker: Reranker):
        self.tokenizer = reranker.tokenizer
        self.max_length = reranker.max_length

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [e["prompt"] for e in examples],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        return dict(batch)


class PointwiseTrainer(transformers.Trainer):
    """transformers' Trainer with the paper's point-wise loss on the "yes" / "no" logits."""

    yes_id: int  # token ids of the two answers, set by the subclass that knows the tokenizer
    no_id: int

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        # only the answer position's logits: (B, 1, V) instead of the whole sequence's
        logits = model(**inputs, logits_to_keep=1).logits[:, -1, :]
        loss = pointwise_reranker_loss(logits.float(), self.yes_id, self.no_id, labels)
        return (loss, {"logits": logits}) if return_outputs else loss


def train_reranker(
    data: Path, model_path: str, out: Path, config: RerankerConfig, resume: bool = False
) -> list[float]:
    """Fine-tune the causal LM at ``model_path`` as a yes/no reranker; returns the loss of every step.

    Runs on transformers' ``Trainer`` (devices, mixed precision, accumulation, checkpoints,
    ``resume`` and several processes as for ``synth train``) with the paper's point-wise loss.
    """
    from transformers import TrainingArguments

    out = Path(out)
    reranker = Reranker(model_path, config.max_length)
    columns = {"prompt": "string", "label": "int64"}
    with examples_on_disk(out, labelled_pairs, columns, data=data, negatives=config.negatives) as pairs:
        if pairs is None:
            return []
        checkpoint = resume_point(out, resume)
        losses = StepLosses(resumed_from=checkpoint)

        class Trainer(RecordsStepLosses, PointwiseTrainer):
            step_losses = losses
            yes_id, no_id = reranker.yes_id, reranker.no_id

        arguments = TrainingArguments(
            **trainer_arguments(config, out, len(pairs)), remove_unused_columns=False
        )
        trainer = Trainer(
            model=reranker.model,
            args=arguments,
            train_dataset=pairs,
            data_collator=PromptCollator(reranker),
            processing_class=reranker.tokenizer,
            callbacks=[losses],
        )
        return train_to_the_end(
            trainer, out, checkpoint, losses, config, model=model_path, data=data, pairs=len(pairs)
        )
