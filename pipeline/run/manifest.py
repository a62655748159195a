"""``manifest.json``: what a finished run is made of (models, templates, shards and their rows)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .. import schema as S
from .. import storage
from ..faults import crash_point
from ..redaction import redact_data
from .folder import DATA, REJECTED, RunFolder, RunStateError
from .plan import RunPlan
from .stats import RunStats


def shard_rows(folder: RunFolder, names: list[str]) -> dict[str, int]:
    """Rows per shard (relative path), from the shards' footers."""
    return {name: storage.parquet_file(folder.resolve(name)).metadata.num_rows for name in names}


def check_counts(folder: RunFolder, stats: RunStats, kept: int, rejected: list[str]) -> None:
    """Refuse to finish a run whose shards hold other row counts than its stats (a row written twice).

    Every row that entered the steps is counted once, kept or dropped; the committed data
    shards must hold exactly the kept rows (``kept``, read from their footers) and the
    committed rejected shards (``rejected``) exactly the dropped ones.
    """
    dropped = sum(shard_rows(folder, rejected).values())
    counted_dropped = sum(counts for stage in stats.stages.values() for counts in stage.dropped.values())
    if kept != stats.rows_out or dropped != counted_dropped:
        raise RunStateError(
            f"{folder}: the shards hold {kept} kept and {dropped} dropped rows, the stats count "
            f"{stats.rows_out} and {counted_dropped}: a chunk was written twice or lost. Rerun into a "
            "new --out (or pass --overwrite) and report this"
        )


def queries_source(config) -> dict:
    """Where the run's queries came from: the generator, or the user's pairs (``--pairs``)."""
    if not config.reads_pairs:
        return {"source": "generator"}
    return {
        "source": "pairs",
        "file": config.pairs.path,
        "positive": "a pair naming a corpus document has as positive the document's passage the embedder "
        "ranks first for its query; a pair giving a positive text has that text",
    }


def aim_summary(path: str, digest: str | None) -> dict:
    """What an aimed run's plan said (``aim/plan.py``): its reasons, share kept, targets, weights."""
    from ..aim.plan import read_aim

    aim = read_aim(path)
    return {
        "file": path,
        "digest": digest,
        "from": aim.get("from"),
        "why": aim.get("why", []),
        "share_kept": aim.get("share_kept"),
        "target_documents": len(aim.get("passages", {}).get("targets", [])),
        "weights": aim.get("generation", {}),
    }


def write_manifest(plan: RunPlan, stats: RunStats, committed: list[str]) -> None:
    """Write the manifest of a complete run (its ``committed`` shards), checked against its stats."""
    folder, models = plan.folder, plan.models
    generator, embedder = models.generator, models.embedder
    rows = shard_rows(folder, [name for name in committed if name.startswith(DATA + "/")])
    shards = [{"path": path, "rows": count} for path, count in rows.items()]
    check_counts(folder, stats, sum(rows.values()), [n for n in committed if n.startswith(REJECTED + "/")])
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": plan.command,
        "models": {
            # with --pairs no model writes queries: the generator is off (the judge may still run)
            "generator": {
                "name": generator.name,
                "path": generator.path,
                **stats.engine,
                **({"enabled": False} if plan.config.reads_pairs else {}),
            },
            "embedder": {
                "name": embedder.name,
                "path": embedder.path,
                # the cuts the cosine filter used where the config left them unset (synth calibrate)
                "cosine_threshold": embedder.cosine_threshold,
                "code_cosine_threshold": embedder.code_cosine_threshold
                if embedder.code_cosine_threshold is not None
                else embedder.cosine_threshold,
            },
            "judge": {"name": plan.config.filters.judge.model or generator.name, "enabled": plan.judge_on},
        },
        "prompts": {name: plan.prompts.prompt(name).hash for name in plan.templates},
        "tasks": list(plan.config.generation.tasks),
        "queries": queries_source(plan.config),
        "seed": plan.config.seed,
        "rows": stats.rows_out,
        "shards": shards,
        "schema": [f"{f.name}: {f.type}" for f in S.ROW_SCHEMA],
    }
    if plan.config.aim.path:
        manifest["aim"] = aim_summary(plan.config.aim.path, plan.config.aim.digest)
    if folder.labels_file.exists():
        manifest["labels"] = json.loads(folder.labels_file.read_text(encoding="utf-8"))
    with storage.atomic_path(folder.manifest_file) as tmp:
        tmp.write_text(json.dumps(redact_data(manifest), indent=2, ensure_ascii=False), encoding="utf-8")
        crash_point("mid_manifest")
