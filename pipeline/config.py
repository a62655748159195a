"""Run configuration: the one place where defaults live.

A run is configured by, in increasing priority: these defaults, a YAML file
(``--config``), ``--set dotted.key=value`` overrides, then the dedicated CLI
flags (``--lang``, ``--corpus``, ...). The resolved config is written to
``OUT/config.yaml`` so every dataset says how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

QUESTION_TYPES = ["keywords", "acquire_knowledge", "summary", "yes_or_no", "background"]
DIFFICULTIES = ["high_school", "university", "phd"]
# what developers type into a code search box (code_search, code_docs)
CODE_QUESTION_TYPES = ["how_to", "error_message", "api_usage", "concept"]
# languages a code_translation row may be written in, by default (pipeline/code/grammars.py knows more)
CODE_TARGETS = ["python", "javascript", "typescript", "go", "java", "rust", "cpp"]


class _Strict(BaseModel):
    # A typo in a YAML key or a --set path must fail, not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(_Strict):
    path: str | None = Field(
        None,
        description="JSONL or Parquet file, folder of .txt files, a dataset saved with "
        "`datasets.save_to_disk`, or a Hugging Face dataset name. None: the sample corpus "
        "shipped in the package, in the first query language if it has one.",
    )
    id_field: str | None = Field(None, description="Column holding the document id. None: `id` or `_id`.")
    text_field: str | None = Field(None, description="Column holding the text. None: `text` or `content`.")
    title_field: str | None = Field(None, description="Column holding an optional title. None: `title`.")
    language_field: str | None = Field(
        None, description="Column holding the document language code. None: `language` or `lang` if present."
    )
    language: str | None = Field(
        None, description="Language code of every document. None: per-row field, else detected."
    )
    hf_split: str = Field("train", description="Split to read when `path` is a Hugging Face dataset.")
    format: Literal["auto", "text", "code"] = Field(
        "auto",
        description="`code`: a folder (or file) is a source tree: source files are cut into functions, "
        "methods and classes with tree-sitter, Markdown/reST files into sections, everything else is "
        "skipped and counted (pipeline/readers/code.py). `text`: .jsonl/.parquet/.txt files as documents. "
        "`auto`: `code` when a code task type is asked for.",
    )
    max_code_tokens: int = Field(
        512,
        ge=16,
        description="A code unit longer than this (generator tokens) is skipped and counted "
        "(`skipped_long_code_unit`): code is never cut mid-function.",
    )
    block_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="Largest block of input one task reads as a unit (JSONL byte ranges, dataset shards; "
        "Parquet splits at its row groups, a .txt file is one block). Blocks are dealt to the tasks "
        "largest first, each to the task with the fewest bytes so far (pipeline/readers/blocks.py).",
    )
    max_passage_tokens: int = Field(
        256,
        ge=16,
        description="Token budget of one passage (generator tokenizer); longer documents are split.",
    )
    min_passage_chars: int = Field(
        20, ge=1, description="Passages shorter than this (after stripping) are skipped and counted."
    )
    max_document_chars: int = Field(
        1_000_000,
        ge=1000,
        description="Documents longer than this are cut to this length (counted as `truncated_huge`) "
        "so one runaway row cannot exhaust memory.",
    )


class PersonaConfig(_Strict):
    path: str | None = Field(
        None,
        description="Persona file or folder: .txt (one persona a line) or .jsonl with a `persona` field "
        "(Persona Hub format). None: the team's collection in `personas/`.",
    )
    top_k: int = Field(5, ge=1, le=20, description="Candidate personas retrieved per passage (paper: 5).")
    code_path: str | None = Field(
        None,
        description="Personas for the code task types, in the same formats. None: the developers in "
        "`personas/developers/`.",
    )


class ModelConfig(_Strict):
    generator: str | None = Field(
        None,
        description="Generator LLM: hub id or local folder. None: the paper's family on a GPU "
        "(Qwen3 with thinking off), the packaged SmolLM2-135M-Instruct elsewhere.",
    )
    embedder: str | None = Field(
        None,
        description="Sentence embedder: hub id or local folder. None: Qwen3-Embedding-0.6B on a GPU, "
        "the packaged all-MiniLM-L6-v2 elsewhere.",
    )
    engine: Literal["vllm", "openai", "batch"] = Field(
        "vllm",
        description="`vllm`: an in-process vLLM engine. `openai`: any OpenAI-compatible server at `base_url` "
        "(vllm serve, SGLang); `generator` then names the served model (None: the first it lists). "
        "`batch`: requests written to OpenAI batch files for a batch runner (vllm run-batch, a hosted "
        "batch API), its results read back with --batch-results; `generator` names the model it serves.",
    )
    base_url: str | None = Field(
        None, description="Server URL for the openai engine, e.g. http://host:8000/v1."
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the server's API key (the key is never logged)."
    )
    revision: str | None = Field(
        None,
        description="The generator's revision as you know it (a commit, a tag, a deployment id): part "
        "of the reply cache's key, so replies of another revision served under the same name never "
        "answer for this one. The cache also keys a server's model by what its /v1/models reports.",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        description="Requests in flight at once with the openai engine, all steps and chunks together. "
        "None: what the server says it runs at once where it says (SGLang's /get_server_info), "
        "else 256 (vLLM's default max_num_seqs; vLLM reports none). While the server answers 429, or "
        "its replies slow down well past its quickest pace, the engine keeps fewer in flight, and "
        "climbs back as it keeps pace.",
    )
    max_attempts: int = Field(
        6, ge=1, description="Tries per request on 429, 5xx and timeouts (exponential backoff with jitter)."
    )
    max_model_len: int = Field(4096, ge=256, description="Context length given to the engine.")
    batch_invariant: bool | None = Field(
        None,
        description="vLLM's batch-invariant mode (VLLM_BATCH_INVARIANT=1): a reply then does not depend on "
        "the batch it ran in, so a resumed run redoes a chunk with the replies of an uninterrupted one "
        "(docs/running.md). None: on where vLLM supports it (NVIDIA GPUs of compute capability 8.0 or "
        "more), off elsewhere (CPU). Its kernels are slower: false where GPU hours count for more than "
        "byte-equal resumes.",
    )
    dtype: str = Field(
        "auto",
        description="Weight dtype for vLLM (`auto`, `bfloat16`, `float32`, ...). `auto` on a CPU: bfloat16 "
        "only where the CPU computes it natively (AVX512-BF16, AMX, Arm BF16), else float32 (bfloat16 "
        "without hardware support was measured 4x slower). On a GPU: the model's own dtype.",
    )
    block_size: int | None = Field(
        None,
        ge=16,
        description="KV-cache block size in tokens. The prefix cache reuses whole blocks only, so a "
        "smaller block caches more of a shared prompt head. None: 32 on CPU (vLLM's own default there, "
        "128, left up to 127 tokens of each template head uncached), the engine's default on GPU.",
    )
    engine_progress: bool = Field(
        False,
        description="Show vLLM's progress bar for each engine call (prompts done, tokens/s); "
        "`synth generate --verbose` turns it on.",
    )
    enforce_eager: bool | None = Field(
        None, description="Skip graph compilation. None: eager on CPU (start 30-40 s instead of ~3 min)."
    )
    cpu_kv_cache_gib: int = Field(
        1, ge=1, description="KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    embedding_store: bool = Field(
        True,
        description="Keep every embedder vector on disk (float16, under the cache folder's vectors/) and "
        "reuse it across steps and runs instead of encoding the same text again.",
    )
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs one engine spans (vLLM tensor parallelism); under Ray, GPUs per replica.",
    )
    structured_backend: Literal["guidance", "xgrammar", "outlines", "auto"] = Field(
        "guidance",
        description="Structured-output backend. `guidance` is the one measured to give strictly valid "
        "JSON with tiny models on CPU; xgrammar let raw control characters into strings.",
    )
    temperature: float = Field(0.7, ge=0, description="Sampling temperature for generation calls.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling for generation calls.")
    embed_batch_size: int = Field(64, ge=1, description="Batch size of the sentence embedder.")
    embedder_languages: list[str] | None = Field(
        None,
        description='Languages whose embedder scores the filters may trust (cosine, margin); `["*"]`: all. '
        "None: English only for known English-only embedders (all-MiniLM-L6-v2, ...), all for others.",
    )


TASK_TYPES = (
    "retrieval",
    "bitext",
    "classification",
    "sts",
    "code_search",
    "code_docs",
    "code_translation",
    "domain",
)
TaskType = Literal[
    "retrieval", "bitext", "classification", "sts", "code_search", "code_docs", "code_translation", "domain"
]
CODE_TASK_TYPES = frozenset({"code_search", "code_docs", "code_translation"})
# task types whose query is a question a person asks about a document (not a sentence, a code
# snippet or a text to label): the query-side checks (copy, judge, margin, mining) apply to them
QUESTION_TASK_TYPES = frozenset({"retrieval", "code_search", "code_docs", "domain"})


def _weights(value: Any) -> Any:
    """A list means equal weights; ``{name: weight}`` is taken as it is."""
    if isinstance(value, (list, tuple)):
        return {item: 1.0 for item in value}
    return value


def _check_weights(name: str, weights: dict) -> dict:
    if not weights:
        raise ValueError(f"{name}: give at least one entry")
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"{name}: weights must be >= 0 and at least one > 0, got {weights}")
    return weights


class GenerationConfig(_Strict):
    tasks: list[TaskType] = Field(
        default_factory=lambda: ["retrieval"],
        description="Task types to synthesize: retrieval, bitext, classification, sts, code_search, "
        "code_docs, code_translation, domain. Every passage yields one row per task type that applies "
        "to it (code types need code units or doc sections; `domain` needs `domains.names` and no corpus).",
    )
    languages: dict[str, float] = Field(
        default_factory=lambda: {"en": 1.0},
        description="Query languages (ISO 639-1) with mixing weights; a list means equal weights. Each row "
        "draws one with the run seed. For bitext rows this is the target language of the translation.",
    )
    passage_languages: dict[str, float] | None = Field(
        None,
        description="Passage languages to use, with mixing weights: passages in other languages are "
        "skipped (counted), and the listed ones are interleaved in these proportions as far as the corpus "
        "allows. None: every passage, in corpus order. With the packaged sample corpus, also which "
        "samples are read.",
    )
    question_types: dict[str, float] = Field(
        default_factory=lambda: {name: 1.0 for name in QUESTION_TYPES},
        description="Question types with sampling weights (a list means equal weights).",
    )
    difficulties: dict[str, float] = Field(
        default_factory=lambda: {name: 1.0 for name in DIFFICULTIES},
        description="Difficulties with sampling weights (a list means equal weights).",
    )
    prompts_dir: str | None = Field(
        None,
        description="Folder of prompt templates laid out like `prompts/` (<task>/<name>.j2), to use "
        "instead of the packaged ones. None: the packaged templates.",
    )
    choose_by: Literal["sampled", "llm"] = Field(
        "sampled",
        description="`sampled`: question type and difficulty are drawn from the weights above with the "
        "run seed, and the configuration call only picks the persona (controlled, reproducible "
        "diversity). `llm`: the configuration call picks all three among the types and difficulties "
        "with weight > 0, as in the paper.",
    )
    calls: Literal["two", "one"] = Field(
        "two",
        description="`two`: the paper's configuration call (picks the persona), then the query call. "
        "`one`: a single call picks the persona among the candidates and writes its query, saving the "
        "configuration call's prompt (the passage and candidates read twice); needs `choose_by: sampled`. "
        "Kept rate, persona spread and cost of both: docs/benchmarks.md.",
    )
    query_length_words: dict[int, float] = Field(
        default_factory=lambda: {4: 0.2, 8: 0.3, 12: 0.25, 20: 0.15, 30: 0.1},
        description="Distribution of the requested query length in words: length -> weight.",
    )
    sts_scores: dict[int, float] = Field(
        default_factory=lambda: {1: 0.2, 2: 0.15, 3: 0.2, 4: 0.2, 5: 0.25},
        description="STS: distribution of the similarity (1 unrelated or contradicting ... 5 paraphrase) "
        "asked for per pair.",
    )
    sts_max_score_gap: int = Field(
        1,
        ge=0,
        le=4,
        description="STS: drop a pair whose own score (the model grades what it wrote) differs from the "
        "requested one by more than this (`score_mismatch`); 4 keeps every pair.",
    )
    labels: dict[str, str] | None = Field(
        None,
        description="Classification: label name -> description. None: the LLM proposes `label_count` "
        "labels from the run's first passages once, saved in OUT/labels.json and reused on resume.",
    )
    label_count: int = Field(8, ge=2, le=32, description="Labels the LLM proposes when `labels` is None.")
    bitext_negatives: int = Field(
        1, ge=1, le=4, description="Bitext: near-miss translations (wrong number, name, negation) per row."
    )
    code_question_types: dict[str, float] = Field(
        default_factory=lambda: {name: 1.0 for name in CODE_QUESTION_TYPES},
        description="code_search / code_docs: kinds of developer question with sampling weights: how_to, "
        "error_message, api_usage, concept.",
    )
    code_targets: dict[str, float] = Field(
        default_factory=lambda: {name: 1.0 for name in CODE_TARGETS},
        description="code_translation: programming languages a snippet is translated into, with weights "
        "(the snippet's own language is never drawn).",
    )
    code_negatives: int = Field(
        1,
        ge=1,
        le=4,
        description="code_translation: near-miss translations per row (a subtle bug, a wrong edge case).",
    )
    max_tokens_code: int = Field(
        1024,
        ge=64,
        description="Upper bound of a code translation call's budget (the translation and near misses).",
    )
    max_tokens_configure: int = Field(64, ge=8, description="Token budget of the configuration call's reply.")
    reply_slack: float = Field(
        2.0,
        ge=1.0,
        description="A reply may run to this many times the length it was asked for (at least 8 words "
        "more) before it is cut and the row dropped as `cut_at_token_limit`. Budgets come from the "
        "requested length per row (pipeline/generate/budgets.py): a looping reply then stops early "
        "instead of holding the whole batch.",
    )
    max_tokens_query: int = Field(
        720,
        ge=8,
        description="Upper bound of the query call's budget (and of the classification and STS calls); "
        "the budget of each row is set from its requested length, below this.",
    )
    max_tokens_bitext: int = Field(
        1024, ge=32, description="Upper bound of the bitext call's budget (a translation plus near misses)."
    )

    @model_validator(mode="after")
    def _one_call_needs_sampled_kinds(self) -> GenerationConfig:
        if self.calls == "one" and self.choose_by != "sampled":
            raise ValueError(
                "generation.calls=one needs generation.choose_by=sampled: a single call picks the persona, "
                "so question type and difficulty must be drawn beforehand"
            )
        return self

    @field_validator("tasks")
    @classmethod
    def _tasks_non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one task type is required")
        if "domain" in v and len(set(v)) > 1:
            raise ValueError(
                "the domain task type makes its own documents: run it apart from corpus task types"
            )
        return list(dict.fromkeys(v))  # order kept, repeats removed

    @field_validator("code_targets")
    @classmethod
    def _known_targets(cls, v: dict[str, float]) -> dict[str, float]:
        from .code.grammars import BY_NAME

        unknown = sorted(set(v) - set(BY_NAME))
        if unknown:
            raise ValueError(f"code_targets: no grammar for {unknown}; known: {sorted(BY_NAME)}")
        return _check_weights("code_targets", v)

    @field_validator(
        "languages",
        "passage_languages",
        "question_types",
        "difficulties",
        "code_question_types",
        "code_targets",
        mode="before",
    )
    @classmethod
    def _list_means_equal_weights(cls, v: Any) -> Any:
        return _weights(v)

    @field_validator("languages", "passage_languages")
    @classmethod
    def _languages(cls, v: dict[str, float] | None, info) -> dict[str, float] | None:
        if v is None:
            return None
        v = {k.strip().lower(): w for k, w in v.items() if k.strip()}
        if not v:
            raise ValueError("at least one language is required")
        return _check_weights(info.field_name, v)

    @field_validator(
        "question_types", "difficulties", "query_length_words", "sts_scores", "code_question_types"
    )
    @classmethod
    def _positive_weights(cls, v: dict, info) -> dict:
        return _check_weights(info.field_name, v)

    @field_validator("sts_scores")
    @classmethod
    def _scores_in_scale(cls, v: dict[int, float]) -> dict[int, float]:
        if any(not 1 <= s <= 5 for s in v):
            raise ValueError(f"sts_scores: scores are on a 1-5 scale, got {sorted(v)}")
        return v

    @property
    def query_languages(self) -> list[str]:
        return list(self.languages)


class NegativesConfig(_Strict):
    llm_count: int = Field(
        1, ge=0, le=8, description="Hard negatives written by the LLM per row (0 turns the call off)."
    )
    mined_count: int = Field(
        3, ge=0, le=32, description="Hard negatives mined from the corpus with the embedder per row."
    )
    model: str | None = Field(
        None,
        description="A trained embedder (a local folder) whose own mistakes become negatives: corpus "
        "passages it ranks above the positive, or within the margin of it (ANCE, RocketQA). `synth loop` "
        "sets the previous round's model. They pass the same margin (the run's embedder scores them) and "
        "the judge when it is on; `negative_sources` says `model`, and they come first in a row's "
        "negatives (a trainer taking one negative per row takes them). None: off.",
    )
    model_count: int = Field(
        2, ge=0, le=16, description="Negatives per row from the trained model's mistakes (with `model`)."
    )
    rank_min: int = Field(
        3,
        ge=0,
        description="Mined candidates start at this rank of the nearest passages (0 = nearest): the very "
        "nearest are often unlabelled positives.",
    )
    rank_max: int = Field(50, ge=1, description="Mined candidates end before this rank.")
    relative_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Positive-aware rule (NV-Retriever TopK-PercPos): keep a negative only if "
        "score(q, neg) < (1 - margin) * score(q, pos). Applied to mined and LLM-written negatives alike.",
    )
    min_negatives: int = Field(
        1, ge=0, description="Rows left with fewer negatives after every check are dropped (`no_negatives`)."
    )
    pool_dir: str | None = Field(
        None,
        description="Where mining pools are built and kept: a folder, or a URL every node reaches "
        "(s3://bucket/pools). Every process of a run, on any machine, takes part in one build of a pool "
        "there (parts of the corpus under leases) and reads a copy on its own machine. None: a pools/ "
        "folder beside --out when it is on object storage, else each machine's cache folder.",
    )
    pool_size: int | None = Field(
        None,
        ge=1,
        description="Cap on the corpus passages negatives are mined from (the first ones of the corpus). "
        "None: the whole corpus, searched exactly up to 100k passages and through an on-disk FAISS IVF-PQ "
        "index above. "
        "Encoding is the cost (all-MiniLM-L6-v2: ~25 passages/s on 2 CPU cores; a GPU embedder, far more); "
        "vectors are kept in the embedding store, so a rerun on the same corpus pays nothing.",
    )
    max_tokens: int = Field(
        1200,
        ge=32,
        description="Upper bound of the negatives call's budget; each row's is set from its passage's "
        "length (a negative is about as long as the positive).",
    )


class JudgeConfig(_Strict):
    enabled: bool | None = Field(
        None,
        description="Run the LLM judge on the positive and every negative. None: on, unless the judge would "
        "be the packaged SmolLM2-135M, whose grades were measured to be at chance level (docs/quality.md): "
        "it would drop rows at random.",
    )
    model: str | None = Field(
        None, description="Judge LLM. None: the generator (the same engine serves both)."
    )
    min_positive_score: int = Field(
        2, ge=0, le=3, description="The positive must score at least this (0-3 rubric) or the row is dropped."
    )
    max_negative_score: int = Field(
        1,
        ge=0,
        le=3,
        description="A negative scoring above this is judged to answer the query and is removed.",
    )
    max_tokens: int = Field(128, ge=16, description="Token budget of one judgement.")


class CosineConfig(_Strict):
    enabled: bool = Field(True, description="Filter pairs by cos(query, positive) from the embedder.")
    mode: Literal["absolute", "percentile"] = Field(
        "absolute",
        description="`absolute`: keep cos > threshold (paper: 0.7). `percentile`: drop the lowest "
        "`percentile` percent of the run so far, for embedders whose scale differs.",
    )
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Cosine a pair must exceed in absolute mode. None: the embedder's calibrated default "
        "(the paper's 0.7 for sentence-transformers models, measured ones for packaged embedders).",
    )
    code_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="The same for code rows (code_search, code_docs, code_translation). None: the embedder's "
        "measured one for code (all-MiniLM-L6-v2 0.35, e5 0.86: docs/quality.md, Code), else its text one.",
    )
    unscored: Literal["drop", "keep"] = Field(
        "drop",
        description="A pair in a language the embedder does not cover cannot be scored: `drop` it as "
        "`unscored_language`, or `keep` it unchecked.",
    )
    percentile: float = Field(20.0, ge=0, lt=100, description="Share of the run dropped in percentile mode.")


class LanguageCheckConfig(_Strict):
    enabled: bool = Field(True, description="Drop rows whose query is not in the requested language.")
    check_negatives: bool = Field(
        True, description="Remove LLM-written negatives that are not in the passage's language."
    )


class DedupConfig(_Strict):
    exact: bool = Field(True, description="Drop queries equal to an earlier one after normalisation.")
    near: bool = Field(True, description="Drop near-duplicate queries (MinHash LSH).")
    near_threshold: float = Field(
        0.8, gt=0, le=1, description="Estimated Jaccard above which queries collide."
    )
    num_perm: int = Field(128, ge=16, description="MinHash permutations.")
    decontaminate: list[str] = Field(
        default_factory=list,
        description="Evaluation query files (BEIR queries.jsonl, JSONL with `text`/`query`, or .txt) whose "
        "queries must not leak into the data.",
    )
    decontaminate_ngram: int = Field(
        8, ge=3, description="A query sharing an n-gram this long (words, or characters for CJK) is dropped."
    )


class CopyCheckConfig(_Strict):
    enabled: bool = Field(True, description="Drop queries that copy the passage instead of asking about it.")
    max_overlap: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Largest share of the query's tokens that may lie in word 4-grams (CJK: character "
        "6-grams) found verbatim in the passage. Small models often paste the passage's first sentence "
        "as the 'query': it passes any cosine filter but teaches nothing beyond string matching.",
    )


class RepetitionConfig(_Strict):
    enabled: bool = Field(True, description="Drop rows whose written text loops on a phrase.")
    max_repeated: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Largest share of a text's word 3-grams (character 4-grams for CJK) that may repeat "
        "an earlier one. Small models that run out of ideas repeat a phrase until the token budget ends.",
    )


class PositiveCheckConfig(_Strict):
    enabled: bool = Field(
        True,
        description="Check every positive against the corpus when negatives are mined (the pool is there): "
        "rows whose positive other passages outrank go to the judge with the best of them (kept, given the "
        "better positive, or dropped as `ambiguous_positive`); without the judge, flagged only. Sets the "
        "`positive_gap` and `easy` columns (docs/quality.md).",
    )
    candidates: int = Field(
        2, ge=1, le=8, description="Outranking passages the judge grades beside the positive."
    )
    easy_margin: float = Field(
        0.1, ge=0, le=2, description="A positive first by more than this cosine gap makes the row `easy`."
    )
    drop_easy_share: float = Field(
        0.0, ge=0, le=1, description="Share of the easy rows dropped, the widest gaps first (`easy`)."
    )


class FiltersConfig(_Strict):
    language: LanguageCheckConfig = Field(default_factory=LanguageCheckConfig, description="Language check.")
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="Looping-text check.")
    passage_copy: CopyCheckConfig = Field(
        default_factory=CopyCheckConfig, description="Copied-passage check."
    )
    cosine: CosineConfig = Field(default_factory=CosineConfig, description="Cosine-similarity filter.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Deduplication and decontamination.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="LLM judge.")
    positive_check: PositiveCheckConfig = Field(
        default_factory=PositiveCheckConfig, description="Every positive checked against the corpus."
    )


class DomainConfig(_Strict):
    names: list[str] = Field(
        default_factory=list,
        description="Domains to write data for without a corpus (`synth generate --domains legal,medical`): "
        "the `domain` task type brainstorms topics (search needs) per domain, then writes a query, the "
        "document that answers it and look-alike documents that do not, all in one call per row.",
    )
    count: int = Field(64, ge=1, description="Rows asked for in all, dealt to the domains in turn.")
    topics_per_domain: int = Field(
        8,
        ge=1,
        le=32,
        validation_alias=AliasChoices("topics_per_domain", "tasks_per_domain"),  # the name before 2026-12
        description="Topics (search needs) brainstormed per domain and language (saved in "
        "OUT/domain_topics.json).",
    )
    negatives: int = Field(
        3, ge=3, le=5, description="Hard-negative documents written with each row (the recipe asks 3-5)."
    )
    document_words: dict[int, float] = Field(
        default_factory=lambda: {50: 0.3, 100: 0.4, 200: 0.3},
        description="Length of the written documents in words: length -> weight.",
    )
    max_tokens: int = Field(
        2048, ge=128, description="Upper bound of a domain row's budget (query, document and negatives)."
    )

    @field_validator("names", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.split(",")
        return list(dict.fromkeys(name.strip().lower() for name in v if name.strip()))

    @field_validator("document_words")
    @classmethod
    def _length_weights(cls, v: dict, info) -> dict:
        return _check_weights(info.field_name, v)


class OutputConfig(_Strict):
    out_dir: str = Field(
        "outputs/run", description="Folder that receives data/, rejected/, stats and config."
    )
    shard_rows: int = Field(
        512,
        ge=1,
        description="Passages per chunk: one chunk is one engine batch, one Parquet file and one checkpoint, "
        "so a crash loses at most one chunk of work.",
    )
    license: str = Field(
        "unknown",
        description="License written in the dataset card (OUT/README.md) and published with the data: a Hub "
        "license id such as cc-by-4.0 or apache-2.0. It should follow the corpus's license.",
    )
    num_tasks: int = Field(
        1,
        ge=1,
        description="Tasks the run is split into: each reads only the input blocks dealt to it (see "
        "corpus.block_bytes). Fixed for the life of an output folder; workers, scheduler "
        "ranks and Ray replicas each take a share of the tasks.",
    )


class FlowConfig(_Strict):
    streamed: bool = Field(
        True,
        description="Rows move through the steps in slices, each on to its next step as soon as its own "
        "replies are back, while other slices, of this chunk and the next ones, keep the engine busy; "
        "chunks are still written and committed whole, in order, and the rows written are those of a "
        "staged run. False: staged, each chunk runs its steps one after another as whole batches, one "
        "chunk at a time (for comparisons and debugging).",
    )
    slice_rows: int = Field(
        16,
        ge=1,
        description="Rows of a chunk that move through the steps together when streamed: small, so a "
        "step's tail is short. The rows written do not depend on it.",
    )
    rows_in_flight: int = Field(
        2048,
        ge=1,
        description="At most this many rows between their first step and their chunk's commit when "
        "streamed (memory stays flat however large the corpus); always at least one chunk.",
    )


class CacheConfig(_Strict):
    enabled: bool = Field(
        True,
        description="Keep every LLM reply in a content-addressed cache and serve a request seen before "
        "from it (same model files, chat, output schema, sampling settings and seed): a rerun pays "
        "only for what changed. `--no-cache` turns it off.",
    )
    path: str | None = Field(
        None,
        description="Cache folder (local or a URL on the run's storage), shared by runs. None: "
        "$SYNTH_REPLY_CACHE, else replies/ in the tool's cache folder ($SYNTH_CACHE, else the user "
        "cache directory).",
    )
    max_gib: float = Field(
        20.0,
        gt=0,
        description="Size bound. Past it the replies used least recently are removed (a hit refreshes "
        "a reply's time) down to 80% of the bound; checked when a worker closes and every 2,000 new "
        "replies.",
    )


class BudgetConfig(_Strict):
    tokens: int | None = Field(
        None,
        ge=1,
        description="Stop at the first chunk boundary once the run has computed this many tokens "
        "(prompt tokens not served from the prefix cache, plus output tokens; replies from the "
        "reply cache are free). Counts what earlier runs into the folder spent; resume with a larger one.",
    )
    engine_hours: float | None = Field(
        None,
        gt=0,
        description="The same for engine time (hours spent waiting for the engine, all workers together).",
    )


class PairsConfig(_Strict):
    path: str | None = Field(
        None,
        description="Your own query-passage pairs (JSONL, Parquet, TSV/CSV, ...: what the corpus reads), "
        "sent through every step after the query call (language, dedup, copy checks, cosine, mined "
        "negatives, margin, judge). Each row: a query, and either the id of a corpus document it "
        "answers (the document's passage the embedder ranks first becomes the positive) or the "
        "positive text itself. Zero LLM tokens are spent on queries.",
    )
    query_field: str | None = Field(None, description="The query column. None: query, question, anchor.")
    document_field: str | None = Field(
        None,
        description="The column naming a corpus document by its id. None: passage_id, doc_id, "
        "document_id, corpus_id.",
    )
    positive_field: str | None = Field(
        None, description="The column holding the positive text. None: positive, passage, answer_text."
    )
    id_field: str | None = Field(None, description="The pair's own id column. None: id, _id, query_id.")
    language_field: str | None = Field(None, description="The query's language column. None: language, lang.")


class AimConfig(_Strict):
    path: str | None = Field(
        None,
        description="An aim file (`synth generate --aim`; `synth loop` writes one per round from the "
        "trained model's failures, docs/training.md): its question-type, difficulty and language weights "
        "replace the configured ones, and passages are drawn toward its target documents, the others "
        "keeping its `share_kept` of the draw. None: the configured distributions, passages in corpus order.",
    )
    digest: str | None = Field(
        None, description="The aim file's content hash, recorded when it is applied (set by the pipeline)."
    )


class RunConfig(_Strict):
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="Where documents come from.")
    personas: PersonaConfig = Field(default_factory=PersonaConfig, description="Persona collection.")
    models: ModelConfig = Field(default_factory=ModelConfig, description="Generator, embedder, engine.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="What to ask for.")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig, description="Hard negatives.")
    filters: FiltersConfig = Field(default_factory=FiltersConfig, description="The quality gate.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")
    domains: DomainConfig = Field(default_factory=DomainConfig, description="Corpus-free domain data.")
    flow: FlowConfig = Field(default_factory=FlowConfig, description="How rows move through the steps.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The reply cache.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Spending limits.")
    limit: int | None = Field(
        None,
        ge=1,
        description="At most this many passages in all, shared evenly by the tasks: each of T tasks takes "
        "the first limit/T passages of its own blocks (one task: the corpus's first `limit`). None: all.",
    )
    seed: int = Field(
        1234,
        description="Seed for every sampled choice (language, question type, difficulty, length, STS score, "
        "passage mix) and for the engine's sampling.",
    )
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Your own query-passage pairs.")
    aim: AimConfig = Field(default_factory=AimConfig, description="A targeted round's plan.")

    @property
    def makes_documents(self) -> bool:
        """A domain run: the LLM writes the documents, no corpus is read."""
        return "domain" in self.generation.tasks

    @property
    def reads_pairs(self) -> bool:
        """Queries come from ``pairs.path``, not from the LLM; the corpus is the mining pool."""
        return self.pairs.path is not None

    @property
    def reads_code(self) -> bool:
        """Read the corpus as a source tree: `corpus.format`, or on `auto` a code task type asked for."""
        if self.corpus.format == "auto":
            return bool(CODE_TASK_TYPES & set(self.generation.tasks))
        return self.corpus.format == "code"

    @model_validator(mode="after")
    def _domains_need_names(self) -> RunConfig:
        if "domain" in self.generation.tasks:
            if not self.domains.names:
                raise ValueError(
                    "the domain task type needs domains.names (synth generate --domains legal,...)"
                )
            if self.corpus.path:
                raise ValueError("the domain task type writes its own documents: give no corpus")
        if self.reads_pairs and set(self.generation.tasks) != {"retrieval"}:
            raise ValueError("--pairs makes retrieval rows only: leave --tasks out (or give retrieval)")
        return self


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


class ConfigFileError(ValueError):
    """A config file or ``--set`` value that is not readable YAML: the message names file, line, column."""


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as YAML so numbers, lists and null work."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"--set {text}: the value is not YAML ({_yaml_problem(exc)})") from None
    return key.strip(), value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    if not context:
        return problem
    mark = getattr(exc, "context_mark", None)
    started = f" started at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem} ({context}{started})"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; every way it can be unreadable is a one-line ``ConfigFileError``."""
    from .storage import read_bytes

    try:
        data = read_bytes(path)  # a local file or a URL (a run folder's config.yaml)
    except IsADirectoryError:
        raise ConfigFileError(f"{path}: a folder, not a config file (give the YAML file inside it)") from None
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file") from None
    if b"\x00" in data[:8192]:
        raise ConfigFileError(f"{path}: a binary file, not a YAML config file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigFileError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{path}: the config file must hold a mapping at the top level")
    return loaded


def known_keys(location: tuple) -> list[str]:
    """The keys a config mapping at ``location`` (a pydantic error's ``loc``, minus its last part) takes."""
    model: Any = RunConfig
    for part in location:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def nearest_key(location: tuple, key: str) -> str | None:
    """The known key closest to a misspelt one (``generaton`` -> ``generation``), if any is close."""
    import difflib

    found = difflib.get_close_matches(key, known_keys(location), n=1, cutoff=0.6)
    return found[0] if found else None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides, then already-typed ``values``
    (the dedicated CLI flags, keyed by dotted path); validated once at the end."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    for key, value in (values or {}).items():
        _set_dotted(data, key, value)
    return RunConfig.model_validate(data)


def config_text(config: RunConfig) -> str:
    """The configuration as YAML, as ``load_config`` reads it back (a run without pairs leaves the
    ``pairs`` section out, as runs made before it existed did)."""
    data = config.model_dump(mode="json", exclude=None if config.reads_pairs else {"pairs"})
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def dump_config(config: RunConfig, path: Path) -> None:
    path.write_text(config_text(config))
