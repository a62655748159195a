"""An MTEB retrieval task scored by ``mteb`` itself, with its data read from a BEIR folder on disk.

mteb downloads its datasets from the Hugging Face Hub. A machine without the Hub, or a user who
already has the benchmark on disk (BEIR's layout: ``corpus.jsonl``, ``queries.jsonl``,
``qrels/<split>.tsv``), names the folder instead: the task keeps the metadata mteb registers
under its name (main score, languages, whether a query's own document counts), so the scores
are computed by the code behind the MTEB leaderboard and can stand beside its figures.

The model is the project's :class:`~pipeline.train.encoder.Encoder` behind mteb's encoder
interface (:class:`SynthModel`): the same pooling, length limit, configured query/document
prompts and instruction as ``synth eval``.

    synth eval --model outputs/model --benchmark DIR --split test --mteb SciFact
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..jsonl import iter_jsonl
from .beir import read_qrels
from .encoder import Encoder


class SynthModel:
    """mteb's ``EncoderProtocol`` over the project's encoder: queries get the query prompt (or the
    instruction), documents the document prompt, as in ``synth eval``."""

    def __init__(self, encoder: Encoder, name: str, instruction: str | None = None, batch_size: int = 64):
        from mteb.models.model_meta import ModelMeta

        self.encoder = encoder
        self.instruction = instruction
        self.batch_size = batch_size
        dimension = int(encoder.model.config.hidden_size)
        self.mteb_model_meta = ModelMeta.create_empty(
            {
                "name": name if "/" in name else f"synth/{name}",
                "embed_dim": dimension,
                "max_tokens": encoder.max_length,
                "similarity_fn_name": "cosine",
                "use_instructions": instruction is not None,
                "framework": ["PyTorch"],
            }
        )

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        query = prompt_type is not None and str(getattr(prompt_type, "value", prompt_type)) == "query"
        texts = [text for batch in inputs for text in batch["text"]]
        vectors = self.encoder.encode(
            texts,
            instruction=self.instruction if query else None,
            batch_size=self.batch_size,
            role="query" if query else "passage",
        )
        return vectors.numpy()

    def similarity(self, a, b):
        import torch

        return torch.as_tensor(np.asarray(a)) @ torch.as_tensor(np.asarray(b)).T

    def similarity_pairwise(self, a, b):
        import torch

        return (torch.as_tensor(np.asarray(a)) * torch.as_tensor(np.asarray(b))).sum(-1)


def retrieval_task(name: str):
    """mteb's task of that name, checked to be a retrieval task (ValueError naming what is wrong)."""
    try:
        import mteb
        from mteb.abstasks.retrieval import AbsTaskRetrieval
    except ImportError as exc:
        raise ValueError("--mteb needs mteb: pip install 'synth-embed-data[mteb]'") from exc
    try:
        task = mteb.get_task(name)
    except KeyError as exc:
        raise ValueError(f"{name}: not an MTEB task name (e.g. SciFact, NFCorpus, ArguAna)") from exc
    if not isinstance(task, AbsTaskRetrieval):
        raise ValueError(f"{name} is an MTEB {task.metadata.type} task: --mteb takes a retrieval task")
    return task


def read_from_disk(task, folder: str | Path, split: str):
    """``task`` (from :func:`retrieval_task`) with its ``split`` read from the BEIR folder ``folder``."""
    from datasets import Dataset

    folder = storage.location(folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    corpus = [
        {"id": str(row["_id"]), "title": row.get("title") or "", "text": row.get("text") or ""}
        for _, row in iter_jsonl(folder / "corpus.jsonl")
    ]
    queries = [
        {"id": str(row["_id"]), "text": row["text"]}
        for _, row in iter_jsonl(folder / "queries.jsonl")
        if str(row["_id"]) in qrels
    ]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        split_data = {
            "corpus": Dataset.from_list(corpus),
            "queries": Dataset.from_list(queries),
            "relevant_docs": qrels,
            "top_ranked": None,
        }
        self.dataset = {subset: {split: split_data} for subset in self.hf_subsets}
        self.data_loaded = True

    task.load_data = load_data.__get__(task)
    task.metadata = task.metadata.model_copy(update={"eval_splits": [split]})
    return task


def evaluate_mteb(
    model_path: str,
    task,
    folder: str | Path,
    split: str,
    instruction: str | None = None,
    max_length: int = 256,
    encoder: Encoder | None = None,
) -> dict[str, Any]:
    """The scores of ``task`` (from :func:`retrieval_task`) as mteb computes them, its main score
    first, for ``synth eval --mteb``."""
    import mteb

    encoder = encoder or Encoder(model_path, max_length=max_length)
    encoder.eval()
    model = SynthModel(encoder, Path(model_path).name, instruction)
    task = read_from_disk(task, folder, split)
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores[split][0]
    main = task.metadata.main_score
    keep = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100")
    return {
        "task": task.metadata.name,
        "split": split,
        "main_score": main,
        main: scores[main],
        **{f"mteb_{k}": scores[k] for k in keep if k in scores},
    }
