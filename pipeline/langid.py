"""Offline language identification with lingua (its models ship inside the wheel).

lingua was chosen over n-gram identifiers such as langid.py because it stays
usable on three-word queries ("coral reef bleaching" is English to lingua, and
0.38 likely English to py3langid). Detection runs over a fixed set of widely
used languages plus whatever the run asks for: fewer candidates mean faster
loading and fewer absurd answers (Latin and Tagalog, which attract acronyms and
keyword lists, are left out unless requested).
"""

from __future__ import annotations

from functools import lru_cache

# Codes the prompts spell out for the model; anything else is passed as the code itself.
LANGUAGE_NAMES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "de": "German",
    "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian",
    "ar": "Arabic", "hi": "Hindi", "vi": "Vietnamese", "th": "Thai", "tr": "Turkish",
    "el": "Greek", "ro": "Romanian", "nl": "Dutch", "pl": "Polish", "id": "Indonesian",
    "sv": "Swedish", "da": "Danish", "fi": "Finnish", "cs": "Czech", "hu": "Hungarian",
    "uk": "Ukrainian", "fa": "Persian", "he": "Hebrew", "bn": "Bengali", "ur": "Urdu", "ms": "Malay",
}  # fmt: skip


def language_name(code: str) -> str:
    """English name of a language code, for prompts ("zh" -> "Chinese")."""
    return LANGUAGE_NAMES.get(code, code)


@lru_cache(maxsize=8)
def _detector(extra: tuple[str, ...] = ()):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = []
    for code in sorted(set(LANGUAGE_NAMES) | set(extra)):
        try:
            codes.append(IsoCode639_1.from_str(code))
        except ValueError:  # a code lingua does not know: it cannot be checked, skip it
            continue
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()


def language_confidences(text: str, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Confidence of each candidate language for ``text`` (they sum to 1), keyed by ISO 639-1 code."""
    values = _detector(tuple(sorted(extra))).compute_language_confidence_values(text)
    return {v.language.iso_code_639_1.name.lower(): float(v.value) for v in values}


def detect_language(text: str) -> tuple[str, float]:
    """Most likely ISO 639-1 code of ``text`` and its confidence ("und" when nothing fits)."""
    confidences = language_confidences(text)
    if not confidences:
        return "und", 0.0
    code = max(confidences, key=confidences.get)
    return code, confidences[code]


def check_language(text: str, code: str, min_margin: float = 0.2) -> tuple[bool, dict[str, float]]:
    """Whether ``text`` may be in language ``code``.

    Fails only on evidence: another language must beat ``code`` by at least
    ``min_margin`` in confidence. A keyword list of acronyms ("CRISPR Cas9"), which
    no detector can place, passes. Returns the decision and the scores behind it.
    """
    if sum(char.isalpha() for char in text) < 2:
        return False, {"requested": 0.0, "best": 0.0}  # digits and punctuation are in no language
    confidences = language_confidences(text, (code,))
    if not confidences:
        return False, {"requested": 0.0, "best": 0.0}
    best = max(confidences, key=confidences.get)
    requested = confidences.get(code, 0.0)
    ok = best == code or confidences[best] - requested < min_margin
    return ok, {"requested": round(requested, 4), "best": round(confidences[best], 4), "best_is_" + best: 1.0}
