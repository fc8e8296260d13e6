"""Normalising and validating user text before it reaches WeChat or an engine."""

from __future__ import annotations

import re
import unicodedata


class TextError(ValueError):
    """User text that cannot be synthesised; `code` is the API error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


_SPACES = re.compile(r"\s+")
# Cc (controls) and Cf (zero-width, bidi overrides) hide content from reviewers and confuse engines.
_INVISIBLE = frozenset({"Cc", "Cf"})


def _visible(ch: str) -> str:
    if ch in "\t\r\n":
        return " "
    return "" if unicodedata.category(ch) in _INVISIBLE else ch


def _unencodable(ch: str) -> bool:
    """A lone surrogate (valid in a JSON string, not in UTF-8) or a Unicode noncharacter."""
    code = ord(ch)
    return 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def normalise_text(text: str, *, max_chars: int) -> str:
    """NFC, invisible characters removed, whitespace folded; raises TextError with the API code.

    Text that is not valid Unicode — a lone surrogate such as JSON's "\\ud800", or a noncharacter —
    is refused (`invalid_request`), not stripped: it is never what a person typed, and quietly
    changing text would make us synthesise something other than what was reviewed.
    """
    if any(map(_unencodable, text)):
        raise TextError("invalid_request", "text contains a lone surrogate or a noncharacter")
    text = _SPACES.sub(" ", "".join(map(_visible, unicodedata.normalize("NFC", text)))).strip()
    if not text:
        raise TextError("text_empty", "text is empty")
    if len(text) > max_chars:
        raise TextError("text_too_long", f"text has {len(text)} characters, at most {max_chars}")
    # Model control tokens such as <|endofprompt|> would let users rewrite the engine's prompt.
    if "<|" in text or "|>" in text:
        raise TextError("text_rejected", "text contains model control markup")
    return text
