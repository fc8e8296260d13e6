"""Text cut into chunks an engine speaks one at a time: at sentence ends, never inside markup.

CosyVoice3 takes about 80 LLM tokens per call, and a stream should start with a short chunk so the
first audio comes early; both engines cut text here. Pure functions, no model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from itertools import pairwise

# Upstream splits its own input at 80 tokens (`split_paragraph(token_max_n=80)`); chunks are kept to
# about that many tokens, estimated by `chunk_weight`.
MAX_CHUNK_WEIGHT = 80.0

# Markup a cut must not fall inside: <strong>…</strong>, special tokens, and bracket tags with the
# character they fix, as in 她[h][ào] (pinyin) or [breath].
_MARKUP = re.compile(r"<strong>.*?</strong>|<\|.*?\|>|\S?(?:\[[^\[\]\s]{1,32}\])+", re.IGNORECASE | re.DOTALL)
# A cut goes after these (and after any closing quote or bracket that follows them). A Latin full
# stop ends a sentence only before whitespace or the end, so 3.14 stays whole.
_CLOSERS = "”’\"'」』）)》】"
_SENTENCE_END = re.compile(rf"(?:[。！？!?；;…\n]|\.(?=\s|$))+[{_CLOSERS}]*")
_CLAUSE_END = re.compile(rf"(?:[，、：]|,(?!\d)|:(?!\d))+[{_CLOSERS}]*")  # 1,000 and 12:30 stay whole
# Characters that cost about one token each; Latin text costs about one per four characters.
_WIDE_CHAR = re.compile(
    r"[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]"
)
_NARROW_CHAR_WEIGHT = 0.25
# A stream's first chunk: about one clause (up to 20 Han characters, three or four seconds of speech),
# so that its audio comes while the rest is still being synthesised.
FIRST_CHUNK_WEIGHT = 20.0

Span = tuple[int, int]


def chunk_weight(text: str) -> float:
    """About how many LLM tokens `text` costs: one per Han/kana/hangul character, a quarter per other."""
    wide = len(_WIDE_CHAR.findall(text))
    visible = sum(1 for ch in text if not ch.isspace())
    return wide + (visible - wide) * _NARROW_CHAR_WEIGHT


def split_text(text: str, max_weight: float = MAX_CHUNK_WEIGHT) -> list[str]:
    """`text` in chunks of at most `max_weight` (see chunk_weight), in order, none empty.

    Cuts at sentence ends; a sentence too long for one chunk is cut at clause ends (，、, :), and a
    clause still too long by weight. No cut ever falls inside markup (`_MARKUP`). Joining the chunks
    gives back the text less whitespace at the cuts.
    """
    if max_weight <= 0:
        raise ValueError("max_weight must be positive")
    protected = [m.span() for m in _MARKUP.finditer(text)]

    def allowed(position: int) -> bool:
        return not any(start < position < end for start, end in protected)

    def fits(span: Span) -> bool:
        return chunk_weight(text[span[0] : span[1]]) <= max_weight

    pieces: list[Span] = []
    for sentence in _cut(text, (0, len(text)), _SENTENCE_END, allowed):
        if fits(sentence):
            pieces.append(sentence)
            continue
        for clause in _cut(text, sentence, _CLAUSE_END, allowed):
            pieces.extend([clause] if fits(clause) else _cut_by_weight(text, clause, max_weight, allowed))
    chunks = (text[start:end].strip() for start, end in _merge(pieces, fits))
    return [chunk for chunk in chunks if chunk]


def stream_chunks(
    text: str, max_weight: float = MAX_CHUNK_WEIGHT, first_weight: float = FIRST_CHUNK_WEIGHT
) -> list[str]:
    """`split_text(text, max_weight)`, with the first chunk cut down to `first_weight` when it is heavier.

    The first cut falls at a clause end where there is one (by weight otherwise, never inside markup);
    the rest of that chunk stays one chunk, so only the first is short.
    """
    chunks = split_text(text, max_weight)
    if not chunks or chunk_weight(chunks[0]) <= first_weight:
        return chunks
    first, *_ = split_text(chunks[0], first_weight)
    rest = chunks[0][len(first) :].strip()  # `first` is a prefix: split_text only strips at cuts
    return [first, *([rest] if rest else []), *chunks[1:]]


def _cut(text: str, span: Span, boundary: re.Pattern[str], allowed: Callable[[int], bool]) -> list[Span]:
    """`span` cut after every `boundary` match that is allowed."""
    start, end = span
    cuts = [
        m.end() for m in boundary.finditer(text, start, end) if start < m.end() < end and allowed(m.end())
    ]
    edges = [start, *cuts, end]
    return list(pairwise(edges))


def _cut_by_weight(text: str, span: Span, max_weight: float, allowed: Callable[[int], bool]) -> list[Span]:
    """`span` cut where the weight runs out, preferring a space (not inside a Latin word)."""
    pieces: list[Span] = []
    start, end = span
    while start < end:
        limit = start
        while limit < end and chunk_weight(text[start : limit + 1]) <= max_weight:
            limit += 1
        if limit >= end:
            pieces.append((start, end))
            break
        candidates = [p for p in range(limit, start, -1) if allowed(p)]
        # Punctuation stays with the words before it.
        unpunctuated = [p for p in candidates if not unicodedata.category(text[p]).startswith("P")]
        at_space = [p for p in unpunctuated if text[p - 1].isspace() or text[p].isspace()]
        # Markup heavier than a whole chunk: keep it whole and cut right after it.
        after = [p for p in range(limit + 1, end) if allowed(p)]
        cut = (at_space or unpunctuated or candidates or after or [end])[0]
        pieces.append((start, cut))
        start = cut
    return pieces


def _merge(pieces: list[Span], fits: Callable[[Span], bool]) -> list[Span]:
    """Adjacent pieces joined greedily while the result still fits."""
    merged: list[Span] = []
    for piece in pieces:
        if merged and fits((merged[-1][0], piece[1])):
            merged[-1] = (merged[-1][0], piece[1])
        else:
            merged.append(piece)
    return merged
