"""The tokenizer every check shares, and the one definition of CJK text.

Copy checks, repetition, dedup, decontamination, the report's lengths and the passage
splitter all cut text the same way: words, with every CJK character a token of its own,
since Chinese and Japanese put no spaces between words. Korean Hangul counts as CJK for
n-grams (one syllable a token) but keeps its spaces when sentences are joined.
"""

from __future__ import annotations

import re
import unicodedata

# the scripts written without spaces between words (kana, Han ideographs, compatibility
# ideographs) and Hangul syllables
CJK_LETTERS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# CJK punctuation and full-width forms: part of CJK text, never of a word
CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"
_CJK = re.compile(f"[{CJK_LETTERS}]")
_SPACELESS = re.compile(f"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff{CJK_PUNCTUATION}]")
_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
# one CJK character, or a run of anything else up to a space or a CJK character
_TOKEN = re.compile(f"[{CJK_LETTERS}]|[^\\s{CJK_LETTERS}]+")


def normalise(text: str) -> str:
    """Unicode NFKC, lower case, punctuation as spaces, single spaces."""
    return " ".join(_PUNCT.sub(" ", unicodedata.normalize("NFKC", text).lower()).split())


def tokens(text: str) -> list[str]:
    """Words, with every CJK character a token of its own.

    Each character decides for itself, never the text around it: a Chinese run inside an
    English prompt splits exactly as it does alone.
    """
    return _TOKEN.findall(normalise(text))


def mostly_cjk(items: list[str]) -> bool:
    """More than half of the tokens are CJK characters: count n-grams in characters, not words."""
    return sum(1 for t in items if len(t) == 1 and _CJK.match(t)) * 2 > len(items)


def ngrams(items: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(items[i : i + n]) for i in range(len(items) - n + 1)}


def joins_without_space(left: str, right: str) -> bool:
    """Two pieces of Chinese or Japanese text (letters or CJK punctuation) touch with no space."""
    return bool(left and right and _SPACELESS.match(left[-1]) and _SPACELESS.match(right[0]))


def passage_overlap(query: str, passage: str) -> float:
    """Share of the query's tokens that lie in an n-gram found verbatim in the passage.

    n-grams are word 4-grams, CJK character 6-grams. Counting covered tokens rather than
    matching n-grams, a pasted sentence with some junk after it still counts as mostly pasted.
    """
    query_tokens = tokens(query)
    n = 6 if mostly_cjk(query_tokens) else 4
    if len(query_tokens) < n:
        return 0.0  # shorter than one n-gram: a keyword query, not a pasted sentence
    found = ngrams(tokens(passage), n)
    covered = [False] * len(query_tokens)
    for i in range(len(query_tokens) - n + 1):
        if tuple(query_tokens[i : i + n]) in found:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(query_tokens)


def repeated_share(text: str) -> float:
    """Share of the text's n-grams (word 3-grams; CJK: character 4-grams) that occur earlier in it."""
    items = tokens(text)
    n = 4 if mostly_cjk(items) else 3
    grams = [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]
    if len(grams) < 4:
        return 0.0  # too short to loop
    return 1.0 - len(set(grams)) / len(grams)
