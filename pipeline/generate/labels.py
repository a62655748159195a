"""The label set of classification rows: from the config, or proposed once by the LLM.

A proposed set is saved in the run folder's ``labels.json`` before any row uses it, so a
resumed run (or another worker) classifies against the very same labels. The file is created
only if absent: when ranks or workers propose at the same moment, the first file written is
the run's, and every other process reads it back and uses it instead of its own proposal.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import storage
from ..engine import ChatEngine
from ..step import request_seed
from .prompts import PromptLibrary
from .replies import label_set_output

log = logging.getLogger(__name__)

TEMPLATE = "classification/labels"
SAMPLE_PASSAGES = 8
SAMPLE_CHARS = 300  # of each passage: the domain shows in the opening, and the prompt stays small

# Used when the model's proposal is unusable: broad topics that fit most general corpora.
FALLBACK_LABELS = {
    "science": "Research findings, experiments and how the natural world works.",
    "health": "Illness, medicine, the body and medical care.",
    "technology": "Computers, software, engineering and devices.",
    "business": "Companies, markets, money and work.",
    "politics": "Government, law, elections and public policy.",
    "culture": "Art, history, literature, religion and customs.",
    "daily life": "Home, food, travel, family and personal matters.",
    "nature": "Animals, plants, weather and the environment.",
}


def load_or_propose(
    path: Path,
    configured: dict[str, str] | None,
    engine: ChatEngine | None,
    prompts: PromptLibrary,
    passages: list[str],
    count: int,
    max_tokens: int = 1024,
    seed: int = 0,
) -> dict[str, str]:
    """The run's labels: configured ones, else those saved at ``path``, else a new proposal (saved)."""
    if configured:
        return dict(configured)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    labels = propose(engine, prompts, passages, count, max_tokens, seed) if engine is not None else None
    if labels is None:
        log.warning("classification labels: using the built-in topic set (%s)", ", ".join(FALLBACK_LABELS))
        labels = dict(FALLBACK_LABELS)
    return create_once(path, labels)


def create_once(path: Path, value):
    """``value`` saved at ``path`` as JSON if no process saved one first; else the one saved first."""
    data = json.dumps(value, indent=2, ensure_ascii=False).encode()
    if storage.create_exclusive(path, data):
        return value
    return json.loads(storage.read_bytes(path))


def propose(
    engine: ChatEngine,
    prompts: PromptLibrary,
    passages: list[str],
    count: int,
    max_tokens: int,
    seed: int = 0,
) -> dict[str, str] | None:
    """Ask the LLM for ``count`` labels; None when the answer is unusable (invalid or repeated names)."""
    sample = [" ".join(p.split())[:SAMPLE_CHARS] for p in passages[:SAMPLE_PASSAGES]]
    chat = [{"role": "user", "content": prompts.render(TEMPLATE, {"passages": sample, "count": count})}]
    # seeded like every request, so the reply cache can answer it in a rerun
    seeds = [request_seed(seed, "labels", TEMPLATE)]
    generation = engine.generate([chat], label_set_output(count), max_tokens, desc="labels", seeds=seeds)[0]
    if generation.parsed is None:
        log.warning("label proposal did not parse: %s", generation.error)
        return None
    labels = usable_labels(generation.parsed.labels, chat[0]["content"])
    if len(labels) < max(2, count // 2):
        log.warning("label proposal unusable (kept %d of %d labels): %s", len(labels), count, list(labels))
        return None
    log.info("classification labels proposed by %s: %s", engine.model_name, ", ".join(labels))
    return labels


def usable_labels(items, prompt: str) -> dict[str, str]:
    """The proposed labels worth keeping: not copied from the worked example, not garbled, not
    a near repeat of another name ("bacteria" / "bacterial")."""
    from .llm_call import copies_example

    labels: dict[str, str] = {}
    for item in items:
        name = " ".join(item.name.lower().split())
        description = " ".join(item.description.split())
        if not name or copies_example(f'"name": "{name}"', prompt) or any(c in description for c in "{}[]"):
            continue
        if any(name.startswith(other) or other.startswith(name) for other in labels):
            continue
        labels[name] = description
    return labels
