"""What a run will cost, projected from a pilot: ``synth plan``.

Two measurements make the projection:

- **the input**: how many passages the run would read. Counted when the corpus is small
  (its first ``SAMPLE_BYTES`` hold everything), else estimated from the bytes of its blocks
  and the passages per byte of that sample; a domain run's count is ``domains.count``.
- **a pilot**: the run itself on ``pilot`` passages, through the real engine and the whole gate,
  into a scratch folder and through the reply cache. The pilot is split into up to
  ``PILOT_TASKS`` tasks, each taking the first passages of its own blocks, so the sample is
  spread over the corpus and each task is one observation: every figure per passage is a ratio
  estimate over the tasks, with a 95% interval from their spread (Student's t on the ratio
  estimator's standard error). The interval says how sure the pilot is, not how the model may
  behave on passages unlike the sample.

Tokens are what the requests take (the engine's counts plus what the reply cache answered for
the pilot), so a rerun of the plan projects the same cost; engine hours come from the pilot's
measured engine seconds per token on this machine, or from a published throughput for a named
GPU and model size (``PUBLISHED_THROUGHPUT``; said as such).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..engine.base import Usage
from ..readers.documents import ReadStats
from ..readers.passages import open_input, read_passages
from .stats import RunStats

SAMPLE_BYTES = 16 << 20  # read at most this much of the corpus to count or estimate its passages
PILOT_TASKS = 8
# Student's t, two-sided 95%, by degrees of freedom (observations - 1)
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
# (GPU, generator size) -> tokens per second (prompt + output) on one GPU: typical, low, high
PUBLISHED_THROUGHPUT = {
    ("h100", "32b"): (
        3195.0,
        2149.0,
        4006.0,
        "Qwen3-32B on one H100 with vLLM's defaults, GPUStack performance lab (docs/scaling.md)",
    ),
}


def price_list(path: str | None, **given: float | None) -> dict[str, float] | None:
    """Prices per million tokens (input, cached, output): a JSON file's, each given one winning.
    None when no price is known; ``ValueError`` naming the file when it is not a price list."""
    from pathlib import Path

    cost = dict(given)
    if path:
        try:
            cost = {
                **json.loads(Path(path).read_text(encoding="utf-8")),
                **{k: v for k, v in given.items() if v},
            }
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a JSON file of prices ({exc})") from None
    cost = {k: float(v) for k, v in cost.items() if v is not None}
    return cost or None


def published_throughput(gpu: str | None, model_size: str | None) -> tuple | None:
    """The published figure for a GPU and a generator size, or None when neither is given."""
    if not (gpu or model_size):
        return None
    key = ((gpu or "").lower(), (model_size or "").lower())
    if key not in PUBLISHED_THROUGHPUT:
        known = ", ".join(f"--gpu {g.upper()} --model-size {m.upper()}" for g, m in PUBLISHED_THROUGHPUT)
        raise ValueError(f"no published throughput for {gpu} / {model_size}; known: {known}")
    return PUBLISHED_THROUGHPUT[key]


@dataclass
class InputCount:
    passages: int
    exact: bool
    how: str


def count_input(config: RunConfig, count_tokens) -> InputCount:
    """The passages the run would read (before ``--limit``): counted, or estimated from a sample."""
    if config.makes_documents:
        return InputCount(config.domains.count, True, "domains.count")
    corpus = open_input(config)
    total_bytes = sum(block.size for block in corpus.blocks)
    stats = ReadStats()
    passages = 0
    if config.reads_pairs:
        from ..readers.pairs import pair_passages

        stream = pair_passages(corpus.read(0, 1, stats.counts), config.pairs, stats)
    else:
        stream = read_passages(corpus, config.corpus, count_tokens, stats)
    for _ in stream:
        passages += 1
        if stats.counts["bytes_read"] >= SAMPLE_BYTES:
            read = stats.counts["bytes_read"]
            estimate = round(passages * total_bytes / read)
            return InputCount(
                estimate,
                False,
                f"estimated: {passages} passages in the first {read:,} of {total_bytes:,} bytes",
            )
    return InputCount(passages, True, f"counted: every passage of {total_bytes:,} bytes")


@dataclass
class Ratio:
    """A per-passage figure over the pilot's tasks: estimate and 95% interval."""

    value: float
    low: float
    high: float

    def times(self, n: float) -> dict[str, float]:
        return {"value": self.value * n, "low": max(0.0, self.low * n), "high": self.high * n}


def ratio(values: list[float], passages: list[int]) -> Ratio:
    """Σvalues / Σpassages with its interval (ratio estimator; no interval from one task)."""
    total = sum(passages)
    if not total:
        return Ratio(0.0, 0.0, 0.0)
    estimate = sum(values) / total
    k = len(passages)
    if k < 2:
        return Ratio(estimate, float("nan"), float("nan"))
    mean_n = total / k
    residuals = [(v - estimate * n) / mean_n for v, n in zip(values, passages, strict=True)]
    error = math.sqrt(sum(r * r for r in residuals) / (k * (k - 1)))
    spread = T_95.get(k - 1, 1.96) * error
    return Ratio(estimate, estimate - spread, estimate + spread)


def used(usage: Usage) -> dict[str, int]:
    """The tokens the requests took, whether the engine or the reply cache answered."""
    return {
        "requests": usage.requests + usage.cache_hits,
        "prompt_tokens": usage.prompt_tokens + usage.cache_prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens + usage.cache_output_tokens,
    }


def project(
    tasks: list[RunStats],
    run_passages: int,
    prices: dict[str, float] | None = None,
    throughput: tuple[float, float, float, str] | None = None,
) -> dict[str, Any]:
    """The whole run's figures from the pilot's per-task stats (see the module's docstring)."""
    observed = [t for t in tasks if _passages(t)]
    passages = [_passages(t) for t in observed]
    total_usage = [t.usage() for t in observed]
    totals = [used(u) for u in total_usage]
    computed = [u["prompt_tokens"] - u["cached_tokens"] + u["output_tokens"] for u in totals]
    tokens = [u["prompt_tokens"] + u["output_tokens"] for u in totals]
    kept = [t.rows_out for t in observed]
    rows = [t.rows_in for t in observed]

    def scaled(values: list[float]) -> dict[str, float]:
        return ratio(values, passages).times(run_passages)

    out: dict[str, Any] = {
        "pilot_passages": sum(passages),
        "pilot_tasks": len(observed),
        "run_passages": run_passages,
        "pilot_rows": sum(rows),
        "pilot_kept": sum(kept),
        "kept_rate": sum(kept) / sum(rows) if sum(rows) else 0.0,
        "stages": _stages(observed, passages, run_passages),
        "rows": scaled(rows),
        "kept_pairs": scaled(kept),
        "tokens": scaled(tokens),
        "computed_tokens": scaled(computed),
        **{
            key: scaled([u[key] for u in totals])
            for key in ("prompt_tokens", "cached_tokens", "output_tokens")
        },
    }
    if sum(kept):
        out["tokens_per_kept_pair"] = sum(tokens) / sum(kept)
    out.update(_engine_hours(out["tokens"], total_usage, throughput))
    if prices:
        out["money"] = {key: _money(out, prices, key) for key in ("value", "low", "high")}
        out["prices_per_million"] = dict(prices)
    return out


def _stages(observed: list[RunStats], passages: list[int], run_passages: int) -> dict[str, Any]:
    """Per LLM stage: the pilot's usage, its kept rate, and its requests and tokens projected."""
    stages: dict[str, Any] = {}
    for name in dict.fromkeys(name for t in observed for name in t.stages):
        counts = [t.stages.get(name) for t in observed]
        usages = [used(c.usage) if c else used(Usage()) for c in counts]
        if not any(u["requests"] for u in usages):
            continue
        entry: dict[str, Any] = {"pilot": {key: sum(u[key] for u in usages) for key in usages[0]}}
        rows_in, rows_out = sum(c.rows_in for c in counts if c), sum(c.rows_out for c in counts if c)
        entry["kept_rate"] = rows_out / rows_in if rows_in else 0.0
        for key in ("requests", "prompt_tokens", "cached_tokens", "output_tokens"):
            entry[key] = ratio([u[key] for u in usages], passages).times(run_passages)
        stages[name] = entry
    return stages


def _engine_hours(projected: dict[str, float], usage: list[Usage], throughput) -> dict[str, Any]:
    """Engine hours at the pilot's own measured speed, and GPU hours at a published one if given."""
    out: dict[str, Any] = {}
    engine_tokens = sum(u.tokens for u in usage)
    seconds = sum(u.seconds for u in usage)
    if engine_tokens and seconds:
        per_token = seconds / engine_tokens  # measured here; applies to all the run's tokens
        out["engine_hours"] = {k: v * per_token / 3600 for k, v in projected.items()}
        out["engine_hours_basis"] = f"measured here: {engine_tokens / seconds:,.0f} tokens per engine second"
    elif not projected.get("value") and not any(u.requests for u in usage):
        out["engine_hours"] = {k: 0.0 for k in projected}
        out["engine_hours_basis"] = "none: the pilot made no LLM call (--pairs with the judge off)"
    else:
        out["engine_hours_basis"] = (
            "unknown: every pilot reply came from the reply cache (plan with --no-cache)"
        )
    if throughput is not None:
        typical, low, high, source = throughput
        out["gpu_hours_published"] = {
            "value": projected["value"] / typical / 3600,
            "low": projected["low"] / high / 3600,
            "high": projected["high"] / low / 3600,
            "source": f"published, not measured here: {source}",
        }
    return out


def _passages(stats: RunStats) -> int:
    return int(stats.reading.get("passages", 0) or stats.reading.get("domain_seeds", 0))


def _money(out: dict, prices: dict[str, float], key: str) -> float:
    prompt, cached, output = (out[name][key] for name in ("prompt_tokens", "cached_tokens", "output_tokens"))
    fresh = max(0.0, prompt - cached)
    cached_price = prices.get("cached", prices.get("input", 0.0))
    return (
        fresh * prices.get("input", 0.0) + cached * cached_price + output * prices.get("output", 0.0)
    ) / 1e6


def format_projection(plan: dict[str, Any], count: InputCount) -> str:
    """The plan on the terminal: per stage, then the run's totals with their intervals."""

    def span(figure: dict[str, float], digits: str = ",.0f") -> str:
        value, low, high = figure["value"], figure["low"], figure["high"]
        if math.isnan(low):
            return f"{value:{digits}} (one pilot task: no interval)"
        return f"{value:{digits}} ({low:{digits}} - {high:{digits}})"

    lines = [
        f"input: {plan['run_passages']:,} passages ({count.how})",
        f"pilot: {plan['pilot_passages']} passages in {plan['pilot_tasks']} task(s), "
        f"{plan['pilot_rows']} rows, {plan['pilot_kept']} kept ({plan['kept_rate']:.0%})",
        "",
        "per LLM stage, for the whole run (kept: the stage's share of rows passed on in the pilot):",
    ]
    for name, entry in plan["stages"].items():
        lines.append(f"  {name:<18} kept {entry['kept_rate']:.0%}   requests {span(entry['requests'])}")
        lines.append(
            f"  {'':<18} prompt tokens {span(entry['prompt_tokens'])}, of them cached "
            f"{span(entry['cached_tokens'])}; output tokens {span(entry['output_tokens'])}"
        )
    lines += [
        "",
        "the whole run (95% interval from the pilot's spread):",
        f"  rows               {span(plan['rows'])}",
        f"  kept pairs         {span(plan['kept_pairs'])}",
        f"  tokens             {span(plan['tokens'])}",
        f"  computed tokens    {span(plan['computed_tokens'])}  (prompt not from the prefix cache + output)",
    ]
    if "tokens_per_kept_pair" in plan:
        lines.append(f"  tokens per kept pair {plan['tokens_per_kept_pair']:,.0f}")
    if "engine_hours" in plan:
        lines.append(
            f"  engine hours       {span(plan['engine_hours'], ',.3g')}  ({plan['engine_hours_basis']})"
        )
    else:
        lines.append(f"  engine hours       {plan['engine_hours_basis']}")
    if "gpu_hours_published" in plan:
        gpu = plan["gpu_hours_published"]
        lines.append(f"  GPU hours          {span(gpu, ',.3g')}  ({gpu['source']})")
    fixed = plan.get("fixed_seconds", {})
    if fixed.get("mining_pool") or fixed.get("engine_start"):
        lines.append(
            f"  once per run       engine start {fixed.get('engine_start', 0):g} s, mining pool "
            f"{fixed.get('mining_pool', 0):g} s (built over the whole corpus, then kept on disk)"
        )
    if "money" in plan:
        lines.append(
            f"  money              {span(plan['money'], ',.2f')}  (at the prices given, per million tokens)"
        )
    return "\n".join(lines)


def plan_json(plan: dict[str, Any]) -> str:
    """The plan as strict JSON: an interval a one-task pilot cannot give is null."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        return value

    return json.dumps(finite(plan), indent=1, allow_nan=False)
