"""Token budgets of LLM replies, from what the reply is asked to hold.

A fixed budget sized for the longest allowed answer lets a looping reply run on
long after the rest of the batch has finished (measured: 16 query calls spent
4.6k output tokens, most of them in a few replies that repeated a phrase while
the batch drained to one or two sequences). A budget per row, from the length
asked for with room to spare, ends such a reply early; it is then dropped as
``cut_at_token_limit`` instead of being dropped later as repetitive.

Tokens per word and per character are upper estimates for byte-level BPE
tokenizers (SmolLM2 spends 1.2 tokens per English word and 1.75 per Chinese
character on the packaged samples; Qwen3 fewer): a well-formed reply never meets
its budget.
"""

from __future__ import annotations

import math

CJK = {"zh", "ja", "ko"}  # a "word" is about two characters, each up to three byte-level tokens
# alphabets outside Latin: two bytes a letter in UTF-8, often split by English-centred vocabularies
NON_LATIN = {"ru", "uk", "el", "ar", "fa", "he", "hi", "bn", "ur", "th"}
JSON_OVERHEAD = 16  # braces, keys and quotes of a small object


def tokens_per_word(language: str) -> float:
    if language in CJK:
        return 6.0
    return 6.0 if language in NON_LATIN else 3.0


def tokens_per_char(language: str) -> float:
    if language in CJK:
        return 3.0
    return 1.5 if language in NON_LATIN else 0.5


def words_budget(words: int, language: str, slack: float) -> int:
    """Tokens for a text of about ``words`` words, allowing ``slack`` times that (and 8 words more)."""
    allowed = max(slack * words, words + 8)
    return JSON_OVERHEAD + math.ceil(allowed * tokens_per_word(language))


def chars_budget(chars: int, language: str) -> int:
    """Tokens for ``chars`` characters of text in ``language``."""
    return math.ceil(chars * tokens_per_char(language))


def capped(budget: int, cap: int | None) -> int:
    return budget if cap is None else min(budget, cap)


def approx_words(text: str, language: str) -> int:
    """Words of ``text``, counting two characters as a word in scripts written without spaces."""
    if language in CJK:
        return max(1, len("".join(text.split())) // 2)
    return max(1, len(text.split()))
