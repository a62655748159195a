"""A task's passages: its blocks read, documents cut into passages, languages mixed, the limit applied.

This is the one place passages come from. ``read_passages`` turns a corpus's raw rows
into passages under the generator's token budget (the mining pool and the label
proposal read the whole corpus through it); ``task_passages`` adds what a task's
stream needs on top: the passage-language mix and the task's share of ``--limit``.
Reading is lazy, so a malformed row deep in a corpus stops the run only after every
shard before it has been written.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from ..config import CorpusConfig, RunConfig
from ..langid import detect_language
from ..text import joins_without_space
from .blocks import Corpus, open_corpus
from .documents import Document, Passage, ReadStats, documents, sample_corpus_paths

MIN_DOCSTRING_CHARS = 20  # shorter docstrings say too little to tell their language


_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])|\n+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _hard_split(sentence: str, count_tokens: Callable[[str], int], budget: int) -> list[str]:
    # A single sentence over budget (a table row, code, a run-on line): halve until it fits.
    if count_tokens(sentence) <= budget or len(sentence) < 2:
        return [sentence]
    middle = len(sentence) // 2
    space = sentence.rfind(" ", 0, middle)
    cut = space if space > len(sentence) // 4 else middle
    return _hard_split(sentence[:cut].strip(), count_tokens, budget) + _hard_split(
        sentence[cut:].strip(), count_tokens, budget
    )


def split_passages(text: str, count_tokens: Callable[[str], int], budget: int) -> list[str]:
    """Greedy packing of whole sentences into passages of at most ``budget`` tokens."""
    if count_tokens(text) <= budget:
        return [text.strip()]
    pieces: list[str] = []
    for sentence in split_sentences(text):
        pieces.extend(_hard_split(sentence, count_tokens, budget))
    passages: list[str] = []
    current: list[str] = []
    for piece in pieces:
        candidate = _join(current + [piece])
        if current and count_tokens(candidate) > budget:
            passages.append(_join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        passages.append(_join(current))
    return passages


def _join(sentences: list[str]) -> str:
    # No space between CJK sentences, one space elsewhere.
    out = ""
    for s in sentences:
        if out and not joins_without_space(out, s):
            out += " "
        out += s
    return out


def iter_passages(
    documents: Iterable[Document],
    count_tokens: Callable[[str], int],
    config: CorpusConfig,
    stats: ReadStats,
) -> Iterator[Passage]:
    """Passages under the token budget, each with a language (given, per-row, or detected).

    A code unit is never cut: one longer than ``max_code_tokens`` is skipped and counted. Its
    natural language (the language its queries are checked against when none is drawn) comes
    from its docstring, the only prose it holds, and is English when that is too short to tell:
    language detection never runs on code.
    """
    for doc in documents:
        if doc.kind in ("code", "seed"):
            passage = _whole(doc, count_tokens, config, stats)
            if passage is not None:
                yield passage
            continue
        chunks = split_passages(doc.text, count_tokens, config.max_passage_tokens)
        if len(chunks) > 1:
            stats.counts["documents_split"] += 1
        for index, chunk in enumerate(chunks):
            if len(chunk.strip()) < config.min_passage_chars:
                stats.counts["skipped_short_passage"] += 1
                continue
            language = doc.language or detect_language(chunk)[0]
            stats.counts["passages"] += 1
            yield Passage(
                passage_id=f"{doc.id}#{index}",
                source_id=doc.id,
                title=doc.title,
                text=chunk,
                language=language,
                kind=doc.kind,
                meta=doc.meta,
            )


def _whole(doc: Document, count_tokens, config: CorpusConfig, stats: ReadStats) -> Passage | None:
    """A code unit or a domain seed as one passage."""
    if doc.kind == "seed":
        stats.counts["domain_seeds"] += 1
        return Passage(f"{doc.id}#0", doc.id, doc.title, doc.text, "", kind="seed", meta=doc.meta)
    if count_tokens(doc.text) > config.max_code_tokens:
        stats.counts["skipped_long_code_unit"] += 1
        return None
    if len(doc.text.strip()) < config.min_passage_chars:
        stats.counts["skipped_short_passage"] += 1
        return None
    docstring = doc.meta.get("docstring", "")
    language = doc.language
    if not language:
        language = detect_language(docstring)[0] if len(docstring) >= MIN_DOCSTRING_CHARS else "en"
    stats.counts["passages"] += 1
    stats.counts["code_passages"] += 1
    return Passage(f"{doc.id}#0", doc.id, doc.title, doc.text, language, kind="code", meta=doc.meta)


def mix_languages(
    passages: Iterator[Passage],
    weights: dict[str, float],
    seed: int,
    stats: ReadStats,
    buffer_limit: int = 20_000,
) -> Iterator[Passage]:
    """Interleave the passages of the listed languages in proportion to ``weights``.

    Each next passage's language is drawn with ``seed`` among the languages that still have
    passages; passages of other languages are skipped and counted (``skipped_passage_language``).
    Reading ahead keeps the passages of the languages not drawn yet, in memory up to
    ``buffer_limit`` per language and on disk past it (``SpillQueue``), so a corpus laid out
    one language after another (one file per language) keeps the asked-for mix and loses no
    passage, with memory bounded. A language leaves the draw only when the corpus has no
    passage of it left; the mix then goes on with the others. Passages read ahead but not
    handed on yet are counted as ``passages_read_ahead`` (what is left there when the run
    stops, at ``--limit``, was read and not used). The order depends only on the corpus order
    and the seed, so every task and every resumed run sees the same sequence.
    """
    import random

    rng = random.Random(seed)
    active = {k: w for k, w in weights.items() if w > 0}
    queues = {k: SpillQueue(buffer_limit) for k in active}
    exhausted = False
    try:
        while active:
            names = list(active)
            language = rng.choices(names, weights=[active[n] for n in names], k=1)[0]
            while not queues[language] and not exhausted:
                try:
                    passage = next(passages)
                except StopIteration:
                    exhausted = True
                    break
                if passage.language not in queues:
                    stats.counts["skipped_passage_language"] += 1
                    continue
                queues[passage.language].append(passage)
                stats.counts["passages_read_ahead"] += 1
            if queues[language]:
                stats.counts["passages_read_ahead"] -= 1
                yield queues[language].popleft()
            else:
                del active[language]
                stats.counts[f"passage_language_exhausted_{language}"] += 1
    finally:
        for queue in queues.values():
            queue.close()


class SpillQueue:
    """A first-in first-out queue of passages: the first ``limit`` in memory, the rest in a
    temporary file, read back ``limit`` at a time (memory stays bounded however far the mix
    has to read ahead)."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._memory: deque[Passage] = deque()
        self._file = None
        self._on_disk = 0  # passages written to the file and not read back yet
        self._read_at = 0  # where the next passage to read back starts in the file

    def __len__(self) -> int:
        return len(self._memory) + self._on_disk

    def append(self, passage: Passage) -> None:
        if not self._on_disk and len(self._memory) < self.limit:
            self._memory.append(passage)
            return
        if self._file is None:
            import tempfile

            self._file = tempfile.TemporaryFile(prefix="synth-mix-")  # noqa: SIM115 - closed by close()
        self._file.seek(0, 2)
        self._file.write(json.dumps(asdict(passage), ensure_ascii=False).encode() + b"\n")
        self._on_disk += 1

    def popleft(self) -> Passage:
        if not self._memory and self._on_disk:
            self._file.seek(self._read_at)
            for _ in range(min(self.limit, self._on_disk)):
                self._memory.append(Passage(**json.loads(self._file.readline())))
                self._on_disk -= 1
            self._read_at = self._file.tell()
            if not self._on_disk:  # all read back: start the file over
                self._file.seek(0)
                self._file.truncate()
                self._read_at = 0
        return self._memory.popleft()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_passages(
    corpus: Corpus,
    config: CorpusConfig,
    count_tokens: Callable[[str], int],
    stats: ReadStats,
    task: int = 0,
    num_tasks: int = 1,
) -> Iterator[Passage]:
    """The passages of task ``task``'s blocks (by default: the whole corpus), in corpus order."""
    rows = corpus.read(task, num_tasks, stats.counts)
    return iter_passages(documents(rows, config, stats), count_tokens, config, stats)


def default_corpus(config: RunConfig) -> list[Path]:
    """The packaged samples read when no corpus is named: those of the passage or query languages."""
    generation = config.generation
    return sample_corpus_paths(generation.passage_languages or generation.languages)


def open_input(config: RunConfig) -> Corpus:
    """What the run's tasks read, cut into blocks for ``output.num_tasks`` tasks (reads metadata
    only): the pairs file with ``--pairs``, else the corpus (``open_documents``)."""
    if config.reads_pairs:
        return open_corpus([config.pairs.path], config.corpus, config.output.num_tasks)
    return open_documents(config)


def open_documents(config: RunConfig) -> Corpus:
    """The run's corpus: the documents its passages (and its mining pool) come from.

    A domain run's corpus is its seeds (``domains.count`` of them, no file behind them).
    """
    if config.makes_documents:
        from .domains import DomainSeeds

        return Corpus([DomainSeeds(config.domains.names, config.domains.count)])
    sources = [config.corpus.path] if config.corpus.path else [str(p) for p in default_corpus(config)]
    return open_corpus(sources, config.corpus, config.output.num_tasks, code=config.reads_code)


def passage_mix(config: RunConfig) -> dict[str, float] | None:
    """Passage-language weights: as configured; for the packaged samples, the query languages' weights."""
    generation = config.generation
    if config.makes_documents:
        return None  # seeds have no language: each row draws its own
    if generation.passage_languages:
        return generation.passage_languages
    if config.corpus.path is None and len(default_corpus(config)) > 1:
        return {lang: w for lang, w in generation.languages.items() if lang in {"en", "zh"}}
    return None


def aimed(stream: Iterator[Passage], config: RunConfig, read_stats: ReadStats) -> Iterator[Passage]:
    """The passages an aim file draws (``aim/plan.py``): every one of a target document, each other
    with the plan's rate (a seeded draw per passage id), none of a held-out document. Each passage
    read is counted once: ``passages_aimed``, ``passages_drawn_by_share``, ``passages_not_drawn``
    or ``passages_held_out``."""
    from ..aim.plan import others_rate, read_aim
    from ..step import row_rng

    aim = read_aim(config.aim.path)
    targets = set(aim.get("passages", {}).get("targets", []))
    held_out = set(aim.get("held_out_documents", []))
    rate = others_rate(aim, config.limit)
    counts = read_stats.counts
    for passage in stream:
        if passage.source_id in held_out:
            counts["passages_held_out"] += 1
        elif passage.source_id in targets:
            counts["passages_aimed"] += 1
            yield passage
        elif row_rng(config.seed, passage.passage_id, "aim").random() < rate:
            counts["passages_drawn_by_share"] += 1
            yield passage
        else:
            counts["passages_not_drawn"] += 1


def limit_share(config: RunConfig, task: int) -> int | None:
    """Task ``task``'s part of ``--limit``: the limit split as evenly as the tasks allow."""
    if not config.limit:
        return None
    tasks = config.output.num_tasks
    return config.limit // tasks + (task < config.limit % tasks)


def task_passages(
    config: RunConfig, corpus: Corpus, task: int, count_tokens, read_stats: ReadStats
) -> Iterator[Passage]:
    """Task ``task``'s passages in their fixed order: its blocks read, split, language-mixed, limited
    (with ``--pairs``: one passage per pair, ``readers/pairs.py``)."""
    if config.reads_pairs:
        from .pairs import pair_passages

        rows = corpus.read(task, config.output.num_tasks, read_stats.counts)
        stream = pair_passages(rows, config.pairs, read_stats)
    else:
        stream = read_passages(corpus, config.corpus, count_tokens, read_stats, task, config.output.num_tasks)
    mix = None if config.reads_pairs else passage_mix(config)
    if mix:
        stream = mix_languages(stream, mix, config.seed, read_stats)
    if config.aim.path:
        stream = aimed(stream, config, read_stats)
    share = limit_share(config, task)
    if share is not None:
        stream = itertools.islice(stream, share)
    return stream
