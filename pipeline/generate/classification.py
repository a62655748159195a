"""Step: classification rows. A text about the passage, its label's description, a tempting wrong label.

The model writes a short text in the row's language, from a persona's view,
drawing on the passage, then picks the label that fits it and the wrong label a
careless reader would pick (when it names the right label again, the label the
embedder finds closest to the text is taken instead). The pair is (text,
description of the label); the wrong label's description is the hard negative.
"""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..config import GenerationConfig
from ..embed.embedder import Embedder
from ..langid import language_name
from ..step import Dropped, Row, StepResult
from . import sampling
from .budgets import capped, words_budget
from .llm_call import LLM, LLMStep, copies_example
from .replies import classification_output

TEMPLATE = "classification/classify"
LABEL_TOKENS = 40  # the two label fields of the reply, names of up to 40 characters


def label_document(name: str, description: str) -> str:
    """The text a label is embedded as: its name, then what it covers."""
    return f"{name}: {description}"


class WriteClassification(LLMStep):
    name = "classification"
    task_types = frozenset({"classification"})

    def __init__(
        self, llm: LLM, config: GenerationConfig, labels: dict[str, str], embedder: Embedder | None = None
    ):
        if len(labels) < 2:
            raise ValueError("classification needs at least two labels")
        super().__init__(llm, config)
        self.labels = labels
        self.output = classification_output(list(labels))
        self.embedder = embedder
        self._label_vectors: np.ndarray | None = None

    def nearest_other_label(self, text: str, label: str) -> str:
        """The label other than ``label`` whose description the embedder finds closest to ``text``."""
        names = list(self.labels)
        if self._label_vectors is None:
            self._label_vectors = self.embedder.encode(
                [label_document(n, self.labels[n]) for n in names], role="passage"
            )
        scores = self._label_vectors @ self.embedder.encode([text], role="passage")[0]  # (L,)
        return max((n for n in names if n != label), key=lambda n: scores[names.index(n)])

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            row[S.PERSONA] = sampling.pick(row[S.WORK_CANDIDATES], self.seed, row[S.ID], "persona")
            row[S.DIFFICULTY] = sampling.difficulty(self.config, self.seed, row[S.ID])
            row[S.QUERY_LENGTH_WORDS] = sampling.length_words(self.config, self.seed, row[S.ID])
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "persona": row[S.PERSONA],
                "difficulty": row[S.DIFFICULTY],
                "length_words": row[S.QUERY_LENGTH_WORDS],
                "language": language_name(row[S.LANGUAGE]),
                "labels": self.labels,
            }
            for row in rows
        ]
        answered, result = self.ask(
            TEMPLATE,
            rows,
            variables,
            self.output,
            [
                capped(
                    LABEL_TOKENS
                    + words_budget(row[S.QUERY_LENGTH_WORDS], row[S.LANGUAGE], self.config.reply_slack),
                    self.config.max_tokens_query,
                )
                for row in rows
            ],
        )
        for row, answer, prompt in answered:
            text = " ".join(answer.text.split())
            wrong = answer.wrong_label
            if wrong == answer.label:
                if self.embedder is None:
                    result.dropped.append(
                        Dropped(row, "same_label", detail=f"label and wrong label are both {wrong!r}")
                    )
                    continue
                # small models often repeat the label: the embedder's closest other label is as tempting
                wrong = self.nearest_other_label(text, answer.label)
                result.events["wrong_label_from_embedder"] += 1
            if copies_example(text, prompt):
                result.dropped.append(
                    Dropped(row, "copied_example", detail="text taken from a worked example", raw_output=text)
                )
                continue
            row[S.QUERY] = text
            row[S.LABEL] = answer.label
            row[S.POSITIVE] = label_document(answer.label, self.labels[answer.label])
            row[S.NEGATIVES] = [label_document(wrong, self.labels[wrong])]
            row[S.NEGATIVE_SOURCES] = ["llm"]
            self.accept(row, result)
        return result
