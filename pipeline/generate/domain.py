"""Corpus-free domain data: topics brainstormed per domain, then one written example per row.

The recipe of E5-mistral, in the pipeline's steps:

1. ``load_or_brainstorm``: once per run, for each domain and query language, the LLM lists
   ``domains.topics_per_domain`` topics, each a search need ("find the clause of a lease that
   covers early termination"); saved in ``OUT/domain_topics.json`` and reused on resume, so
   every task of a run, and every rerun, draws from the same list. The prompt asks for "search
   tasks", E5-mistral's phrase; here a task is a unit of work, so the code says topic.
2. ``DomainTopic`` (step): each seed row draws one topic of its domain with the run seed; the
   topic text becomes what the persona retrieval reads, so personas fit the topic.
3. ``WriteDomainExample`` (step): one structured call writes the query (persona, question type,
   difficulty and length drawn as in corpus mode), the document that answers it, and 3-5
   documents that look relevant but do not answer it; the gate then treats them like any
   retrieval row (language, dedup, cosine, margin, judge).
"""

from __future__ import annotations

import json
import logging

from .. import schema as S
from ..config import DomainConfig, GenerationConfig
from ..engine import ChatEngine
from ..langid import check_language, language_name
from ..step import Dropped, Row, Step, StepResult, request_seed
from ..text import normalise, repeated_share
from . import sampling
from .budgets import JSON_OVERHEAD, capped, words_budget
from .llm_call import LLM, PARAPHRASE_SHARE, LLMStep, copies_example, example_word_share
from .prompts import PromptLibrary
from .replies import domain_example_output, domain_topics_output

log = logging.getLogger(__name__)

BRAINSTORM = "domain/brainstorm"
EXAMPLE = "domain/example"
DOCUMENT_SLACK = 1.25  # a written document may run a quarter longer than asked before it is cut


def fallback_topic(domain: str) -> str:
    """The one topic used when the brainstorm gave nothing usable for a domain (said in the log)."""
    return f"Find a {domain} document that answers a specific question a person has"


MIN_TOPIC_WORDS = 5


def usable_topic(topic: str, prompt: str) -> bool:
    """A topic a person could have: words, not a path or a number run, and not the example's."""
    words = topic.split()
    letters = sum(c.isalpha() or c.isspace() for c in topic) / max(1, len(topic))
    return len(words) >= MIN_TOPIC_WORDS and letters >= 0.8 and not copies_example(topic, prompt)


def brainstorm(
    engine: ChatEngine, prompts: PromptLibrary, config: DomainConfig, languages: list[str], seed: int
) -> dict[str, list[str]]:
    """``domain/language`` -> topics, one call per pair; a failed reply falls back (logged)."""
    keys = [(domain, language) for domain in config.names for language in languages]
    chats = [
        [
            {
                "role": "user",
                "content": prompts.render(
                    BRAINSTORM,
                    {"domain": d, "language": language_name(lang), "count": config.topics_per_domain},
                ),
            }
        ]
        for d, lang in keys
    ]
    seeds = [request_seed(seed, f"{d}/{lang}", BRAINSTORM) for d, lang in keys]
    output = domain_topics_output(config.topics_per_domain)
    budget = JSON_OVERHEAD + config.topics_per_domain * 64
    generations = engine.generate(chats, output, budget, desc=BRAINSTORM, seeds=seeds)
    topics: dict[str, list[str]] = {}
    for (domain, language), chat, generation in zip(keys, chats, generations, strict=True):
        found = []
        if generation.parsed is not None:
            written = dict.fromkeys(" ".join(t.split()) for t in generation.parsed.tasks)
            found = [topic for topic in written if usable_topic(topic, chat[0]["content"])]
            if len(found) < len(written):
                log.info(
                    "domain %s (%s): %d of %d topics unusable",
                    domain,
                    language,
                    len(written) - len(found),
                    len(written),
                )
        if not found:
            log.warning(
                "domain %s (%s): the brainstorm gave no topic; using one generic topic", domain, language
            )
            found = [fallback_topic(domain)]
        topics[f"{domain}/{language}"] = found
    return topics


def load_or_brainstorm(
    path, engine: ChatEngine, prompts: PromptLibrary, config: DomainConfig, languages: list[str], seed: int
) -> dict[str, list[str]]:
    """The run's topic lists: read from ``path`` when a run already made them, else brainstormed and
    saved; created only if absent, so processes brainstorming at once all use the first one saved."""
    from ..storage import write_json
    from .labels import create_once

    wanted = {f"{d}/{lang}" for d in config.names for lang in languages}
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if wanted <= set(saved):
            return saved
        topics = brainstorm(engine, prompts, config, languages, seed)
        write_json(path, topics)  # an older run's lists lack some domains: replaced whole
        return topics
    return create_once(path, brainstorm(engine, prompts, config, languages, seed))


class DomainTopic(Step):
    """Each seed row draws its topic; the topic text is what persona retrieval then reads."""

    name = "domain_topic"
    task_types = frozenset({"domain"})

    def __init__(self, topics: dict[str, list[str]], seed: int):
        self.topics = topics
        self.seed = seed

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            choices = self.topics.get(f"{row[S.DOMAIN]}/{row[S.LANGUAGE]}") or [fallback_topic(row[S.DOMAIN])]
            # the draw's salt keeps its old name, so a run draws the same topics as before the rename
            row[S.TITLE] = sampling.pick(choices, self.seed, row[S.ID], "domain_task")
            row[S.POSITIVE] = f"{row[S.DOMAIN]}: {row[S.TITLE]}"  # replaced by the written document
        return StepResult(kept=rows)


class WriteDomainExample(LLMStep):
    """The query, the document that answers it and the look-alikes, in one call."""

    name = "domain_example"
    task_types = frozenset({"domain"})

    def __init__(
        self,
        llm: LLM,
        config: GenerationConfig,
        domains: DomainConfig,
        check_language: bool = True,
        max_repeated: float = 1.0,
    ):
        super().__init__(llm, config)
        self.domains = domains
        # the documents it writes are negatives too: the gate's repetition check never sees them
        self.max_repeated = max_repeated
        self.check_language = check_language
        self.output = domain_example_output(domains.negatives)

    @staticmethod
    def copies(text: str, prompt: str) -> bool:
        return copies_example(text, prompt) or example_word_share(text, prompt) >= PARAPHRASE_SHARE

    def _budget(self, row: Row) -> int:
        language, words = row[S.LANGUAGE], row["_document_words"]
        query = words_budget(row[S.QUERY_LENGTH_WORDS], language, self.config.reply_slack)
        documents = (1 + self.domains.negatives) * words_budget(words, language, DOCUMENT_SLACK)
        return capped(JSON_OVERHEAD + query + documents, self.domains.max_tokens)

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            row[S.PERSONA] = sampling.pick(row[S.WORK_CANDIDATES], self.seed, row[S.ID], "persona")
            sampling.draw_question(row, self.config, self.seed)
            row[S.QUERY_LENGTH_WORDS] = sampling.length_words(self.config, self.seed, row[S.ID])
            row["_document_words"] = sampling.weighted_choice(
                self.domains.document_words, self.seed, row[S.ID], "document_words"
            )
        variables = [
            {
                "domain": row[S.DOMAIN],
                "task": row[S.TITLE],
                "persona": row[S.PERSONA],
                "question_type": row[S.QUESTION_TYPE],
                "difficulty": row[S.DIFFICULTY],
                "length_words": row[S.QUERY_LENGTH_WORDS],
                "document_words": row["_document_words"],
                "language": language_name(row[S.LANGUAGE]),
                "count": self.domains.negatives,
            }
            for row in rows
        ]
        budgets = [self._budget(row) for row in rows]
        answered, result = self.ask(EXAMPLE, rows, variables, self.output, budgets)
        for row in rows:
            row.pop("_document_words", None)
        for row, answer, prompt in answered:
            query, positive = " ".join(answer.query.split()), " ".join(answer.positive.split())
            if any(self.copies(text, prompt) for text in (query, positive)):
                result.dropped.append(
                    Dropped(
                        row, "copied_example", detail="the worked example, copied or retold", raw_output=query
                    )
                )
                continue
            negatives = []
            for text in answer.negatives:
                text = " ".join(text.split())
                if normalise(text) == normalise(positive):
                    result.events["negatives_removed_copy_of_positive"] += 1
                elif self.copies(text, prompt):
                    result.events["negatives_removed_copied_example"] += 1
                elif repeated_share(text) > self.max_repeated:
                    result.events["negatives_removed_repetitive"] += 1
                elif self.check_language and not check_language(text, row[S.LANGUAGE])[0]:
                    result.events["negatives_removed_wrong_language"] += 1
                elif text not in negatives:
                    negatives.append(text)
            row[S.QUERY], row[S.POSITIVE] = query, positive
            row[S.WORK_LLM_NEGATIVES] = negatives  # the margin step chooses among them
            self.accept(row, result)
        return result
