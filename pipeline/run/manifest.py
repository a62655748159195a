"""``manifest.json``: what a finished run is made of (models, templates, shards and their rows)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .. import atomic
from .. import schema as S
from .plan import RunPlan
from .stats import RunStats


def write_manifest(plan: RunPlan, stats: RunStats) -> None:
    import pyarrow.parquet as pq

    folder, models = plan.folder, plan.models
    generator, embedder = models.generator, models.embedder
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": plan.command,
        "models": {
            "generator": {"name": generator.name, "path": generator.path, **stats.engine},
            "embedder": {"name": embedder.name, "path": embedder.path},
            "judge": {"name": plan.config.filters.judge.model or generator.name, "enabled": plan.judge_on},
        },
        "prompts": {name: plan.prompts.prompt(name).hash for name in plan.templates},
        "tasks": list(plan.config.generation.tasks),
        "seed": plan.config.seed,
        "rows": stats.rows_out,
        "shards": [
            {"path": folder.relative(p), "rows": pq.ParquetFile(p).metadata.num_rows}
            for p in folder.data_shards()
        ],
        "schema": [f"{f.name}: {f.type}" for f in S.ROW_SCHEMA],
    }
    if folder.labels_file.exists():
        manifest["labels"] = json.loads(folder.labels_file.read_text(encoding="utf-8"))
    atomic.write_json(folder.manifest_file, manifest)
