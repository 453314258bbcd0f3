"""The dashboard in English and French: the language from the browser, a switch on every page.

Templates are written in English and call `_("...")`; `FRENCH` maps each sentence to its
translation (a missing one shows in English, and `tests/unit/test_web_i18n.py` lists none is
missing). Quality-rule messages come from `domain.quality` in English, with a stable `code`; the
French ones are rebuilt here from the code and the values the English message names, so the rules
stay in one place and a new rule without a translation is caught by the same test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from services.web.french import FRENCH, QUALITY_FR

LANGUAGES = ("en", "fr")
DEFAULT = "en"
LANG_COOKIE = "okr_lang"

Translate = Callable[[str], str]


def negotiate(accept_language: str | None, chosen: str | None = None) -> str:
    """The language chosen on the page (cookie) if any, else the browser's first we speak."""
    if chosen in LANGUAGES:
        assert chosen is not None
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LANGUAGES and quality > 0:
            ranked.append((-quality, position, language))
    return sorted(ranked)[0][2] if ranked else DEFAULT


def translator(lang: str) -> Translate:
    if lang == "fr":
        return lambda text: FRENCH.get(text, text)
    return lambda text: text


def quality_message(code: str, message: str, lang: str) -> str:
    """A quality issue's message in `lang`; the English one when no French rule matches."""
    if lang != "fr":
        return message
    for pattern, french in QUALITY_FR.get(code, ()):
        match = re.fullmatch(pattern, message, flags=re.DOTALL)
        if match:
            return french.format(**match.groupdict())
    return message


def has_french(code: str, message: str) -> bool:
    return quality_message(code, message, "fr") != message or not QUALITY_FR.get(code)


def localized(issues: Sequence[Mapping[str, str]], lang: str) -> list[dict[str, str]]:
    return [
        {**issue, "message": quality_message(issue["code"], issue["message"], lang)}
        for issue in issues
    ]
