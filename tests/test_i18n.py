"""The catalogues: the template holds every message the code says, and every language
translates every one of them with the same placeholders."""

from __future__ import annotations

import string

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

from bot.core import messages
from bot.core.i18n import LANGUAGES, LOCALE_DIR, catalogue_path, supported, texts

TRANSLATED = [code for code in LANGUAGES if code != "en"]
# As in the README's `pybabel extract` command.
KEYWORDS = {**DEFAULT_KEYWORDS, "n_": (1, 2), "ImageRejected": None}


def template() -> dict[str, object]:
    with (LOCALE_DIR / "bot.pot").open("rb") as pot:
        return {message.id: message for message in read_po(pot) if message.id}


def said_in_the_code() -> set[str]:
    root = LOCALE_DIR.parent.parent
    found = set()
    for path in [*(root / "bot").rglob("*.py"), *(root / "inference").rglob("*.py")]:
        for _, message, _, _ in extract_from_file("python", path, KEYWORDS):
            found.add(message if isinstance(message, str) else message[0])
    return found


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_template_holds_every_message_the_code_says():
    singular_ids = {key if isinstance(key, str) else key[0] for key in template()}
    assert said_in_the_code() == singular_ids, "re-run the README's pybabel extract / update"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_with_the_same_placeholders(language):
    with catalogue_path(language).open("rb") as po:
        catalogue = {message.id: message for message in read_po(po) if message.id}
    assert catalogue.keys() == template().keys()
    differ = 0
    for key, message in catalogue.items():
        ids = [key] if isinstance(key, str) else list(key)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        assert all(strings) and not message.fuzzy, f"{language}: {ids[0]!r} is untranslated"
        for text in strings:
            assert placeholders(text) == placeholders(ids[-1]), f"{language}: {text!r}"
        differ += strings[0] != ids[0]
    assert differ >= 0.8 * len(catalogue)  # written in the language, not English copied over


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_language_speaks_its_own_words(language):
    t = texts(language)
    assert t.language == language
    assert t._(messages.HELP) != messages.HELP
    assert "/count" in t._(messages.HELP) and "/forget" in t._(messages.HELP)
    assert messages.count_set(t, 8).count("8") == 1  # the number is filled in


@pytest.mark.parametrize(
    ("client", "spoken"),
    [("es", "es"), ("pt-BR", "pt"), ("es-419", "es"), ("DE", "de"), ("zh-CN", None), ("", None)],
)
def test_a_clients_language_code_is_matched_to_a_catalogue(client, spoken):
    assert supported(client) == spoken
    assert texts(client).language == (spoken or "en")
