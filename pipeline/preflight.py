"""Checks made before anything expensive: no model is loaded and no engine started until they pass.

Each failure is one ``InputError`` whose message names the file, the row (line number) and the
field where there is one, and says what would be valid. Checked, in order:

- no setting holds a secret (a password or key in a URL, a secret variable's value): the
  config is written to ``config.yaml`` and the command line to the manifest and the card;
- settings that contradict each other, and language codes nobody can detect;
- the output folder (a folder, writable);
- the persona file or folder (it holds personas);
- the templates the run uses (they exist and compile; a custom template uses only variables the
  packaged one is given);
- a first look at the corpus: the first rows of every file parse and have the needed fields, and
  no id repeats among them; a corpus of at most 32 MiB is read whole (a second or two), so every
  stop it could cause is found before anything is written.

This module imports no model library: a bad input fails in about a second.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .config import RunConfig

FIRST_LOOK_ROWS = 200  # rows read from the start of each corpus file
FIRST_LOOK_FILES = 50  # files looked at in a corpus folder
WHOLE_CHECK_BYTES = 32 << 20  # a corpus this small is read whole: every stop is found before a run starts


class InputError(ValueError):
    """A bad input found before the run starts; the message is the whole story."""


def preflight(config: RunConfig) -> None:
    check_secrets(config)
    check_settings(config)
    check_models(config)
    check_output(config.output.out_dir)
    check_personas(config)
    check_templates(config)
    documents = check_corpus(config)
    if config.reads_pairs:
        check_pairs(config, documents)


def check_secrets(config: RunConfig) -> None:
    """Refuse a setting that holds a secret, before ``config.yaml`` (or anything else) is written.

    ``models.base_url`` gets its own advice (the key belongs in ``--api-key-env``); a storage
    URL (``--corpus``, ``--out``, ``--cache``, ``$SYNTH_REPLY_CACHE``) the store's.
    """
    from . import redaction, storage
    from .engine.reply_cache import default_root

    redaction.register_variable(config.models.api_key_env)
    base_url = config.models.base_url
    if base_url and redaction.credentials_in(base_url):
        raise InputError(
            f"models.base_url (--base-url): {redaction.redact(base_url)} holds "
            f"{redaction.credentials_in(base_url)}, which would be written to config.yaml, the manifest "
            "and the card: give the server's URL alone and the key in an environment variable named by "
            "--api-key-env (models.api_key_env)"
        )
    places = [("SYNTH_REPLY_CACHE", default_root()), *_settings(config.model_dump(mode="json"))]
    for key, value in places:
        try:
            if isinstance(value, str):
                storage.check_url(value)
        except storage.StorageError as exc:
            raise InputError(f"{key}: {exc}") from None
    for key, value in places:
        if isinstance(value, str) and redaction.redact(value) != value:
            raise InputError(
                f"{key}: {redaction.redact(value)} holds a secret (a password or key in a URL, or the value "
                "of a secret environment variable), which would be written to config.yaml: give "
                "credentials through the environment (AWS_*, HF_TOKEN, --api-key-env) instead"
            )


def _settings(node: object, prefix: str = ""):
    """(dotted key, value) of every leaf setting."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _settings(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for number, value in enumerate(node):
            yield from _settings(value, f"{prefix}{number}.")
    else:
        yield prefix.rstrip("."), node


def known_language_codes() -> set[str]:
    from lingua import Language

    return {language.iso_code_639_1.name.lower() for language in Language.all()}


def check_settings(config: RunConfig) -> None:
    negatives = config.negatives
    if negatives.mined_count and negatives.rank_min >= negatives.rank_max:
        raise InputError(
            f"negatives.rank_min ({negatives.rank_min}) must be below negatives.rank_max "
            f"({negatives.rank_max}): mined negatives come from the ranks between them"
        )
    if negatives.mined_count > negatives.rank_max - negatives.rank_min:
        raise InputError(
            f"negatives.mined_count ({negatives.mined_count}) is more than the ranks "
            f"{negatives.rank_min}..{negatives.rank_max} hold: lower it or widen the range"
        )
    if negatives.min_negatives > negatives.mined_count + negatives.llm_count:
        raise InputError(
            f"negatives.min_negatives ({negatives.min_negatives}) is more than a row can get (mined_count "
            f"{negatives.mined_count} + llm_count {negatives.llm_count}): every row would be dropped"
        )
    known = known_language_codes()
    generation = config.generation
    for field, codes in (
        ("generation.languages", generation.languages),
        ("generation.passage_languages", generation.passage_languages or {}),
    ):
        for code in codes:
            if code not in known:
                raise InputError(
                    f"{field}: {code!r} is not an ISO 639-1 language code the language check knows "
                    "(two letters, e.g. en, zh, ja, de)"
                )
    if config.corpus.language and config.corpus.language not in known:
        raise InputError(
            f"corpus.language: {config.corpus.language!r} is not an ISO 639-1 code (e.g. en, zh)"
        )
    if config.models.engine == "batch" and not config.models.generator:
        raise InputError(
            "--engine batch needs --model: the name of the model the batch runner serves (each "
            'request\'s "model")'
        )
    if config.limit is not None and config.limit < config.output.num_tasks:
        raise InputError(
            f"limit ({config.limit}) is below output.num_tasks ({config.output.num_tasks}): some tasks "
            "would get no passage; lower --num-tasks or raise --limit"
        )


def check_models(config: RunConfig) -> None:
    """A generator or embedder given as a local path must be a model folder (config.json and weights)."""
    from .models import PACKAGED_EMBEDDERS

    named = [
        ("models.generator (--model)", config.models.generator),
        ("filters.judge.model", config.filters.judge.model),
    ]
    if config.models.embedder not in PACKAGED_EMBEDDERS:
        named.append(("models.embedder (--embedder)", config.models.embedder))
    if config.models.engine != "vllm":
        named = [n for n in named if not n[0].startswith(("models.generator", "filters.judge"))]
    named.append(("negatives.model", config.negatives.model))
    for field, value in named:
        if not value or not (value.startswith((".", "/", "~")) or Path(value).exists()):
            continue  # unset, or a Hub id: resolved when the model loads
        path = Path(value).expanduser()
        if not path.exists():
            raise InputError(f"{field}: {value}: no such folder (give a model folder or a Hub id)")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InputError(
                f"{field}: {value} is not a model folder (no config.json): give a folder saved by "
                "transformers / sentence-transformers, or a Hub id"
            )
        weights = [*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.gguf")]
        if not weights:
            raise InputError(f"{field}: {value} has no weights (*.safetensors, *.bin or *.gguf)")


def check_output(url: str | Path) -> None:
    """The output folder can be written: a probe file written and removed (an object on a store)."""
    from . import storage

    if storage.is_url(url):
        _check_remote_output(str(url))
        return
    out = Path(url)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the output path is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-check-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{out}: cannot write in the output folder ({exc.strerror or exc})") from None


def _check_remote_output(url: str) -> None:
    from . import storage

    try:
        out = storage.location(url)
        if out.is_file():
            raise InputError(f"{url}: the output path is a file, not a folder; choose another --out")
        probe = out / f".write-check-{uuid.uuid4().hex[:8]}"
        storage.write_bytes(probe, b"")
        storage.remove(probe)
    except InputError:
        raise
    except storage.StorageError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # the store's own errors: no bucket, no credentials, no network
        raise InputError(f"{storage.redact(url)}: cannot write there ({storage.reason(exc)})") from None


def check_personas(config: RunConfig) -> None:
    from .config import CODE_TASK_TYPES
    from .generate.personas import PersonaError, developer_personas, load_personas

    checks = [("personas.path", config.personas.path, load_personas)]
    if CODE_TASK_TYPES & set(config.generation.tasks):
        checks.append(("personas.code_path", config.personas.code_path, developer_personas))
    for key, path, load in checks:
        try:
            load(path)
        except PersonaError as exc:
            raise InputError(f"{key}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{key}: {path}: not valid UTF-8 (byte {exc.start})") from None


def check_templates(config: RunConfig) -> None:
    from jinja2 import meta

    from .generate.prompts import PromptError, PromptLibrary, default_prompt_dir, templates_of

    folder = config.generation.prompts_dir
    library = PromptLibrary(Path(folder) if folder else None)
    packaged = PromptLibrary(default_prompt_dir())
    languages = [None, *config.generation.languages]
    for name in templates_of(config):
        for language in languages:
            try:
                prompt = library.prompt(name, language)
            except PromptError as exc:
                raise InputError(f"generation.prompts_dir: {exc}") from None
            if not folder:
                continue
            used = meta.find_undeclared_variables(library._env.parse(prompt.source))
            try:
                reference = packaged.prompt(name, language)
            except PromptError:
                continue
            given = meta.find_undeclared_variables(packaged._env.parse(reference.source))
            unknown = sorted(used - given)
            if unknown:
                raise InputError(
                    f"{prompt.path}: uses {', '.join(unknown)}, which the step does not provide; "
                    f"available: {', '.join(sorted(given))}"
                )


def _check_corpus_named(config: RunConfig) -> None:
    """Pairs and code task types need a corpus of the user's: the packaged sample will not do."""
    from .config import CODE_TASK_TYPES

    if config.reads_pairs and not config.corpus.path:
        raise InputError(
            "--pairs needs --corpus: the documents the pairs name, and the pool negatives are mined from"
        )
    code_types = sorted(CODE_TASK_TYPES & set(config.generation.tasks))
    if code_types and not config.corpus.path:
        raise InputError(
            f"{', '.join(code_types)}: these task types read code; name a source tree or a JSONL/Parquet "
            "file of code rows with --corpus"
        )


def check_corpus(config: RunConfig) -> dict[str, object] | None:
    """Open the corpus and read the first rows of each file through the real reader and field rules.

    Returns every document id with where it was read when the corpus was small enough to read
    whole (None otherwise): ``check_pairs`` looks the pairs' documents up in it."""
    from collections import Counter

    from . import storage
    from .readers.blocks import corpus_readers
    from .readers.documents import CorpusError, ReadStats, documents, sample_corpus_path

    if config.makes_documents:
        return None  # a domain run reads no corpus
    _check_corpus_named(config)
    source = config.corpus.path or str(sample_corpus_path(config.generation.query_languages[0]))
    remote = storage.is_url(source)
    if config.corpus.path and not remote and not source.startswith((".", "/")) and not Path(source).exists():
        return None  # a Hub dataset name: nothing local to look at, and loading it is the expensive part
    try:
        readers = corpus_readers(source, config.corpus, code=config.reads_code)
    except CorpusError as exc:
        raise InputError(str(exc)) from None
    except PermissionError as exc:
        raise InputError(f"{source}: cannot read it ({exc.strerror})") from None
    except Exception as exc:
        if not remote:
            raise
        raise InputError(f"{storage.redact(source)}: cannot read it ({storage.reason(exc)})") from None
    if Path(source).is_file() and os.path.getsize(source) == 0:
        raise InputError(f"{source}: the corpus file is empty")
    whole = sum(_size(reader) for reader in readers) <= WHOLE_CHECK_BYTES
    found = 0
    seen: dict[str, object] = {}  # id -> where it was first read, over every file looked at
    for reader in readers if whole else readers[:FIRST_LOOK_FILES]:
        blocks = reader.blocks()
        if not blocks:
            continue
        stats = ReadStats()
        if whole:
            rows = (row for block in blocks for row in reader.rows(block, Counter()))
        else:
            rows = _first_rows(reader, blocks[0], Counter())
        try:
            found += sum(1 for _ in documents(rows, config.corpus, stats, seen_ids=seen))
        except CorpusError as exc:
            raise InputError(str(exc)) from None
        except PermissionError as exc:
            raise InputError(f"{reader.source}: cannot read it ({exc.strerror})") from None
    if found == 0 and (whole or len(readers) <= FIRST_LOOK_FILES):
        where = "in the corpus" if whole else f"in the first {FIRST_LOOK_ROWS} rows of any file"
        raise InputError(f"{source}: no document with text {where}")
    return seen if whole else None


def check_pairs(config: RunConfig, documents: dict[str, object] | None) -> None:
    """Read the pairs file (whole when small, else its first rows) through the real readers and
    the pair rules; when the corpus was read whole, every document a pair names must be in it."""
    from collections import Counter

    from .readers.blocks import corpus_readers
    from .readers.documents import CorpusError, ReadStats
    from .readers.pairs import pair_passages

    source = config.pairs.path
    try:
        readers = corpus_readers(source, config.corpus)
        whole = sum(_size(reader) for reader in readers) <= WHOLE_CHECK_BYTES
        found = 0
        for reader in readers:
            for block in reader.blocks():
                rows = reader.rows(block, Counter()) if whole else _first_rows(reader, block, Counter())
                for pair in pair_passages(rows, config.pairs, ReadStats()):
                    found += 1
                    named = pair.meta["document"]
                    if named and documents is not None and named not in documents:
                        where, corpus = pair.meta["where"], config.corpus.path
                        raise InputError(f"{where}: document {named!r} is not in the corpus ({corpus})")
                if not whole:
                    break
    except CorpusError as exc:
        raise InputError(str(exc)) from None
    if found == 0:
        raise InputError(f"{source}: no pairs in it")


def _size(reader) -> int:
    try:
        return reader.size()
    except (OSError, NotImplementedError, AttributeError):
        return WHOLE_CHECK_BYTES + 1  # unknown (a saved dataset): look at its start only


def _first_rows(reader, block, counts):
    for number, row in enumerate(reader.rows(block, counts)):
        if number >= FIRST_LOOK_ROWS:
            return
        yield row


def check_training_inputs(data: Path, model: str) -> Path:
    """``synth train`` / ``train-reranker``: the folder of row shards to train on (a split run
    folder's ``splits/train/``, so held-out documents stay held out; else its ``data/``; or the
    folder itself), once it holds rows and a local model folder exists."""
    import pyarrow.parquet as pq

    from .run.folder import RunFolder, shards_under

    run = RunFolder(data)
    folder = next((f for f in (run.train_split_folder, run.data_folder) if f.is_dir()), data)
    shards = shards_under(folder) if folder.is_dir() else []
    if not shards:
        raise InputError(f"{data}: no row shards (part-*.parquet) in it or in its data/ folder")
    if not any(pq.ParquetFile(shard).metadata.num_rows for shard in shards):
        raise InputError(f"{data}: its {len(shards)} shard(s) hold no rows")
    local = Path(model).expanduser()
    if model and (local.is_absolute() or model.startswith((".", "~"))) and not local.is_dir():
        raise InputError(f"{model}: no such model folder")
    return folder


def check_benchmark(benchmark: str, split: str | None) -> str:
    """``synth eval``: the qrels split to score, once the BEIR folder is known to hold it."""
    from . import storage
    from .train.beir import only_split

    folder = storage.location(benchmark)
    layout = "a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    for name in ("corpus.jsonl", "queries.jsonl", "qrels"):
        if not (folder / name).exists():
            raise InputError(f"{benchmark}: no {name} ({layout})")
    try:
        split = split or only_split(folder)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if not (folder / "qrels" / f"{split}.tsv").exists():
        raise InputError(f"{benchmark}: no qrels/{split}.tsv ({layout})")
    return split
