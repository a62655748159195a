"""Offline language identification (py3langid ships its model inside the wheel)."""

from __future__ import annotations

from functools import lru_cache

# Codes the prompts spell out for the model; anything else is passed as the code itself.
LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "ar": "Arabic",
    "hi": "Hindi",
    "vi": "Vietnamese",
    "th": "Thai",
    "tr": "Turkish",
    "el": "Greek",
    "ro": "Romanian",
    "nl": "Dutch",
    "pl": "Polish",
    "id": "Indonesian",
}


def language_name(code: str) -> str:
    """English name of a language code, for prompts ("zh" -> "Chinese")."""
    return LANGUAGE_NAMES.get(code, code)


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """Most likely ISO 639-1 code of ``text`` and its probability."""
    code, prob = _identifier().classify(text)
    return str(code), float(prob)
