"""CosyVoice3's prompt strings and our text chunking: pure functions, no torch, no model.

Fun-CosyVoice3 asserts an `<|endofprompt|>` marker before the text it speaks (docs/COSYVOICE3.md
lists the three modes' prompt strings); the formats below are those of upstream's `example.py` and
`instruct_list`, verbatim; the instruction inside instruct_text is the preset's own (common.presets).
Text that contains `<|…|>` skips upstream normalisation *and* sentence splitting, so long text is cut
here, at sentence boundaries, before it reaches the model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from itertools import pairwise

from common.presets import PRESETS_BY_ID
from synth_worker.engines.errors import EngineInputError

SYSTEM_PROMPT = "You are a helpful assistant."
END_OF_PROMPT = "<|endofprompt|>"
# What zero-shot puts before the transcript and cross-lingual before the text to speak.
PROMPT_PREFIX = SYSTEM_PROMPT + END_OF_PROMPT

# Upstream splits its own input at 80 tokens (`split_paragraph(token_max_n=80)`); chunks are kept to
# about that many tokens, estimated by `chunk_weight`.
MAX_CHUNK_WEIGHT = 80.0

# The tokenizer is called with allowed_special="all": typed `<|…|>` would become control tokens.
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]{0,64}\|>")
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

Span = tuple[int, int]


def strip_special_tokens(text: str) -> str:
    """The text with every `<|…|>` removed, until none is left (removal can join a new one)."""
    while True:
        stripped = _SPECIAL_TOKEN.sub("", text)
        if stripped == text:
            return text
        text = stripped


def zero_shot_prompt_text(transcript: str) -> str:
    """`prompt_text` for inference_zero_shot and add_zero_shot_spk."""
    return PROMPT_PREFIX + transcript


def cross_lingual_tts_text(text: str) -> str:
    """`tts_text` for inference_cross_lingual: v3 wants the prefix on the text itself."""
    return PROMPT_PREFIX + text


def preset_instruction(preset_id: str) -> str:
    """The natural-language instruction of a published preset (common.presets)."""
    preset = PRESETS_BY_ID.get(preset_id)
    if preset is None:
        raise EngineInputError(f"unknown preset {preset_id!r}")
    return preset.instruction


def instruct_text(preset_id: str) -> str:
    """`instruct_text` for inference_instruct2.

    E.g. "You are a helpful assistant. 请用四川话表达。<|endofprompt|>" for "sichuan".
    """
    return f"{SYSTEM_PROMPT} {preset_instruction(preset_id)}{END_OF_PROMPT}"


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
