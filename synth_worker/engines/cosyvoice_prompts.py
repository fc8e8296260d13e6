"""CosyVoice3's prompt strings and our text chunking: pure functions, no torch, no model.

Fun-CosyVoice3 asserts an `<|endofprompt|>` marker before the text it speaks (docs/COSYVOICE3.md
lists the three modes' prompt strings); the formats below are those of upstream's `example.py` and
`instruct_list`, verbatim; the instruction inside instruct_text is the preset's own (common.presets).
Text that contains `<|…|>` skips upstream normalisation *and* sentence splitting, so long text is cut
before it reaches the model (synth_worker.engines.text_chunks).
"""

from __future__ import annotations

import re

from common.presets import PRESETS_BY_ID
from synth_worker.engines.errors import EngineInputError

SYSTEM_PROMPT = "You are a helpful assistant."
END_OF_PROMPT = "<|endofprompt|>"
# What zero-shot puts before the transcript and cross-lingual before the text to speak.
PROMPT_PREFIX = SYSTEM_PROMPT + END_OF_PROMPT

# The tokenizer is called with allowed_special="all": typed `<|…|>` would become control tokens.
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]{0,64}\|>")


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
