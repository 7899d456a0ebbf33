"""The bot's languages: which one a person gets, and its catalogue.

Every text the bot says is an English gettext message id (bot/core/messages.py); the
translations are gettext catalogues, `bot/locale/<language>/LC_MESSAGES/bot.po`, read with
Babel when first needed, so a translator edits a .po file with any gettext tool and nothing
compiled is committed. `bot/locale/bot.pot` is the template, extracted from the code with
`pybabel extract` (README, "Languages"); a test keeps it and every catalogue complete.

A person's language is the one they chose with /language, else their app's (Telegram's
`language_code`, Discord's `locale`), else English. Hashtags stay as the model knows them.
"""

from __future__ import annotations

import functools
import gettext
import io
from dataclasses import dataclass
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "bot"
DEFAULT_LANGUAGE = "en"
# Each language's name in itself, as a person looks for it in a menu.
LANGUAGES = {
    "en": "English",
    "es": "Español",
    "pt": "Português",
    "de": "Deutsch",
    "fr": "Français",
    "ru": "Русский",
    "it": "Italiano",
}


def N_(message: str) -> str:
    """Marks a message id for the catalogue (`pybabel extract`); translated where it is said."""
    return message


def supported(code: str | None) -> str | None:
    """The supported language a client's code asks for ("pt-BR", "es_419", "DE" -> "pt",
    "es", "de"); None for a language the bot does not speak, or no code."""
    if not code:
        return None
    base = code.strip().replace("_", "-").split("-")[0].lower()
    return base if base in LANGUAGES else None


@dataclass(frozen=True)
class Texts:
    """One language's catalogue: `_` for a message, `n_` for one that depends on a number."""

    language: str
    catalogue: gettext.NullTranslations

    def _(self, message: str) -> str:
        return self.catalogue.gettext(message)

    def n_(self, singular: str, plural: str, count: int) -> str:
        return self.catalogue.ngettext(singular, plural, count)


def texts(language: str | None = None) -> Texts:
    """The catalogue of a supported language (English for any other)."""
    return _catalogue(supported(language) or DEFAULT_LANGUAGE)


@functools.cache
def _catalogue(language: str) -> Texts:
    """Read once per language, whichever code ("es", "es-ES", "es-419") asked for it."""
    path = catalogue_path(language)
    if language == DEFAULT_LANGUAGE or not path.is_file():
        return Texts(DEFAULT_LANGUAGE, gettext.NullTranslations())
    with path.open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Texts(language, gettext.GNUTranslations(compiled))


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


ENGLISH = texts(DEFAULT_LANGUAGE)
