"""Hashtag vocabularies: one hashtag per line, the first whitespace-separated word.

That rule reads plain lists and HARRISON's `vocab_index.txt` ("love   0") alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

HARRISON_VOCAB_RESOURCE = "harrison_vocab.txt"  # inference/data/, from HARRISON


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used, with what to fix."""


def normalize_hashtag(text: str) -> str:
    """Compare hashtags the way people read them: no leading '#', case-insensitive."""
    return text.strip().lstrip("#").lower()


def parse_vocabulary(text: str, source: str = "vocabulary") -> list[str]:
    tags: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        tag = normalize_hashtag(words[0])
        if tag and tag not in seen:
            seen.add(tag)
            tags.append(tag)
    if not tags:
        raise VocabularyError(f"{source} holds no hashtags: expected one hashtag per line")
    return tags


def load_vocabulary(path: str | Path | None = None) -> list[str]:
    """The hashtags in `path`, or HARRISON's 997 when no path is given."""
    if path is None:
        text = resources.files("inference").joinpath("data", HARRISON_VOCAB_RESOURCE).read_text()
        return parse_vocabulary(text, "the built-in HARRISON vocabulary")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabularyError(f"vocabulary file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise VocabularyError(f"cannot read vocabulary file {path}: {error}") from None
    return parse_vocabulary(text, str(path))
