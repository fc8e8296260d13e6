"""The local sensitive-word gate that runs before msgSecCheck: free, instant, and under our control.

WeChat's msgSecCheck is the authority, but it costs a network call, has a daily quota and knows nothing
of words an operator must refuse for their own reasons. This gate catches those first, with one
Aho-Corasick pass (pyahocorasick) over the text however long the list is.

Both the words and the text are NFKC-normalised and casefolded, so full-width and upper-case variants
match. A second automaton matches after removing every separator (spaces, punctuation, symbols,
zero-width and other invisible characters), so "敏 感 词", "敏-感-词" and "敏\u200b感词" still hit.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import ahocorasick

from common.config import ConfigError

log = logging.getLogger(__name__)

SHIPPED_WORDS_FILE = Path(__file__).with_name("data") / "sensitive_words.txt"

# Unicode major categories dropped for the compact match: separators (Z), punctuation (P),
# symbols (S, which covers emoji) and other (C: controls, zero-width and format characters).
_SEPARATOR_CATEGORIES = frozenset("ZPSC")
# Evasion *between* characters needs at least two of them; a word that compacts to fewer (such as
# "c++" -> "c") would match far too much text, so it is only matched as written.
_MIN_COMPACT_CHARS = 2


class SensitiveWordsError(ConfigError):
    """The configured word list cannot be read: the gateway must not start without its gate."""


def normalise(text: str) -> str:
    """NFKC then casefold: "ＴＥＳＴ" and "Test" both become "test"."""
    return unicodedata.normalize("NFKC", text).casefold()


def compact(normalised: str) -> str:
    """`normalised` without whitespace, punctuation, symbols or invisible characters."""
    return "".join(ch for ch in normalised if unicodedata.category(ch)[0] not in _SEPARATOR_CATEGORIES)


def parse_word_list(content: str) -> list[str]:
    """One word per line; blank lines and lines starting with `#` are ignored, duplicates dropped."""
    words = (line.strip() for line in content.splitlines())
    return list(dict.fromkeys(w for w in words if w and not w.startswith("#")))


class SensitiveWords:
    """An immutable matcher built once per process; `find` is pure and takes microseconds."""

    def __init__(self, words: Iterable[str]) -> None:
        self._plain = ahocorasick.Automaton()
        self._compact = ahocorasick.Automaton()
        self._count = 0
        for word in words:
            self._add(word)
        # An automaton without words cannot be searched: only build (and later search) non-empty ones.
        for automaton in (self._plain, self._compact):
            if len(automaton):
                automaton.make_automaton()

    def _add(self, word: str) -> None:
        plain = normalise(word.strip())
        if not plain:
            return
        self._count += 1
        self._plain.add_word(plain, word)
        squeezed = compact(plain)
        if len(squeezed) >= _MIN_COMPACT_CHARS:
            self._compact.add_word(squeezed, word)

    @classmethod
    def from_file(cls, path: str | Path) -> SensitiveWords:
        """Read a UTF-8 word list; an unreadable file raises SensitiveWordsError (fail at start-up)."""
        path = Path(path)
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SensitiveWordsError(f"sensitive word list {path} cannot be read: {exc}") from exc
        words = cls(parse_word_list(content))
        log.info("sensitive word list %s: %d words", path, len(words))
        return words

    @classmethod
    def configured(cls, path: str | None) -> SensitiveWords:
        """The operator's list (SENSITIVE_WORDS_FILE), or the placeholder list shipped with the code."""
        return cls.from_file(SHIPPED_WORDS_FILE if path is None else path)

    def __len__(self) -> int:
        return self._count

    def find(self, text: str) -> str | None:
        """The first listed word found in `text` (as written in the list), or None."""
        plain = normalise(text)
        hit = _first(self._plain, plain)
        return hit if hit is not None else _first(self._compact, compact(plain))


def _first(automaton: ahocorasick.Automaton, text: str) -> str | None:
    if not len(automaton):
        return None
    for _end, word in automaton.iter(text):
        return word
    return None
