"""Embedding encoder in the Qwen3 Embedding style, for any Hugging Face model.

- Decoder models (Qwen3 and other causal LMs): left padding, the end-of-text token appended
  when the tokenizer does not add it, and the last layer's hidden state of that final token.
- Encoder models (BERT family): mean or CLS pooling, as the sentence-transformers pooling
  config of the checkpoint says (mean when it says nothing).
- L2 normalisation; Matryoshka truncation to any ``dim`` (truncate, then normalise).
- Queries get the instruction ``Instruct: {task}\\nQuery:{query}`` when one is given; otherwise
  each side gets the prompt the model's sentence-transformers config names for its role (e5's
  "query: " / "passage: ", Qwen3-Embedding's query instruction), as sentence-transformers would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..instructions import format_query
from .device import best_device

DECODER_TYPES = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3"}


def is_decoder(config) -> bool:
    """Whether a transformers config describes a causal LM (last-token pooling, the Qwen3 way)."""
    return config.model_type in DECODER_TYPES or bool(getattr(config, "is_decoder", 0))


def _pooling_from_st_config(path: Path) -> str:
    """The pooling a sentence-transformers folder names, in the old (``pooling_mode_*``) or new key."""
    config = path / "1_Pooling" / "config.json"
    if config.exists():
        data = json.loads(config.read_text())
        mode = data.get("pooling_mode")
        if data.get("pooling_mode_cls_token") or mode == "cls":
            return "cls"
        if data.get("pooling_mode_lasttoken") or mode == "lasttoken":
            return "last"
    return "mean"


def _prompts_from_st_config(path: Path) -> dict[str, str]:
    """The prompts of a sentence-transformers folder (``config_sentence_transformers.json``)."""
    config = path / "config_sentence_transformers.json"
    if not config.exists():
        return {}
    prompts = json.loads(config.read_text()).get("prompts") or {}
    return {name: text for name, text in prompts.items() if text}


class Encoder(nn.Module):
    def __init__(
        self,
        model_path: str,
        pooling: str | None = None,
        max_length: int = 512,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.device = torch.device(device) if device is not None else best_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(self.device)
        decoder = is_decoder(self.model.config)
        self.pooling = pooling or ("last" if decoder else _pooling_from_st_config(Path(model_path)))
        if self.pooling == "last":
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = max_length
        self.prompts = _prompts_from_st_config(Path(model_path))

    def prompt(self, role: str | None) -> str:
        """The text put before every ``role`` text: the model's configured prompt for it, or nothing."""
        from ..embed.embedder import prompt_name

        name = prompt_name(self.prompts, role) if role else None
        return self.prompts[name] if name else ""

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.pooling == "last":
            eos = self.tokenizer.eos_token or ""
            texts = [t if t.endswith(eos) else t + eos for t in texts]  # the embedding is read at this token
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            add_special_tokens=self.pooling != "last",
        )
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor], dim: int | None = None) -> torch.Tensor:
        mask = batch["attention_mask"]  # (B, T)
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=mask)
        if self.pooling == "last":
            # left padding: positions count real tokens only, so padding does not shift them
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(**kwargs).last_hidden_state  # (B, T, H)
        if self.pooling == "last":
            pooled = hidden[:, -1]  # left padding puts every sequence's final token last
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if dim is not None:
            pooled = pooled[:, :dim]
        return F.normalize(pooled, dim=-1)

    def encode(
        self,
        texts: list[str],
        instruction: str | None = None,
        batch_size: int = 32,
        dim: int | None = None,
        role: str | None = None,
    ) -> torch.Tensor:
        """Embeddings without gradients, (len(texts), dim or hidden size).

        ``instruction`` (queries of Qwen3-style models) replaces the model's prompt for ``role``.
        """
        prefix = "" if instruction else self.prompt(role)
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = [prefix + format_query(t, instruction) for t in texts[start : start + batch_size]]
                out.append(self(self.tokenize(chunk), dim=dim).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)
