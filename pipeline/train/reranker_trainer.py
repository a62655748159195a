"""Fine-tuning a point-wise yes/no reranker (Qwen3-Reranker style) on the pipeline's shards.

Every row gives one relevant pair (query, positive) labelled "yes" and one pair per hard
negative labelled "no". The causal LM reads the paper's prompt (``reranker_prompt``) and is
trained with ``pointwise_reranker_loss`` on its next-token logits for "yes" and "no", left
padded so the last position is the answer position in every sequence.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch

from .. import schema as S
from .config import RerankerConfig
from .losses.reranker import (
    DEFAULT_INSTRUCTION,
    pointwise_reranker_loss,
    relevance_scores,
    reranker_prompt,
)
from .trainer import stream_rows, warmup_then_linear_decay

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


def labelled_pairs(data: Path, negatives: int) -> list[tuple[str, int]]:
    """(prompt, label) for every row: the positive as 1, up to ``negatives`` negatives as 0."""
    pairs = []
    for row in stream_rows(data):
        instruction = row.get(S.INSTRUCTION) or DEFAULT_INSTRUCTION
        pairs.append((reranker_prompt(row[S.QUERY], row[S.POSITIVE], instruction), 1))
        for negative in row[S.NEGATIVES][:negatives]:
            pairs.append((reranker_prompt(row[S.QUERY], negative, instruction), 0))
    return pairs


def train_reranker(data: Path, model_path: str, out: Path, config: RerankerConfig) -> list[float]:
    """Fine-tune the causal LM at ``model_path`` as a yes/no reranker; returns the loss of every step."""
    torch.manual_seed(config.seed)
    reranker = Reranker(model_path, config.max_length)
    reranker.model.train()
    pairs = labelled_pairs(data, config.negatives)
    if not pairs:
        return []
    total_steps = max(1, math.ceil(len(pairs) / config.batch_size) * config.epochs)
    warmup = int(total_steps * config.warmup_ratio)
    optimizer = torch.optim.AdamW(reranker.model.parameters(), lr=config.lr)
    schedule = warmup_then_linear_decay(optimizer, total_steps, warmup)
    rng = random.Random(config.seed)
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = pairs[:]
        rng.shuffle(order)  # mixes "yes" and "no" pairs within each batch
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            labels = torch.tensor([label for _, label in batch])  # (B,)
            logits = reranker.last_logits([prompt for prompt, _ in batch])  # (B, V)
            loss = pointwise_reranker_loss(logits, reranker.yes_id, reranker.no_id, labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reranker.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if len(losses) % config.log_every == 0 or len(losses) == 1:
                log.info("epoch %d step %d/%d loss %.4f", epoch, len(losses), total_steps, losses[-1])
    out.mkdir(parents=True, exist_ok=True)
    reranker.model.save_pretrained(out, safe_serialization=True)
    reranker.tokenizer.save_pretrained(out)
    summary = {"config": {**asdict(config), "model": str(model_path), "data": str(data)}, "losses": losses}
    summary["pairs"] = len(pairs)
    (out / "training_log.json").write_text(json.dumps(summary, indent=2))
    return losses
