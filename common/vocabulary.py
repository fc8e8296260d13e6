"""The closed sets of names the services agree on, each spelled out once.

Where a set has a default, it comes first. Tuples keep the order the API documents (and error
messages list); `in` works on them as on a set. Tests may still spell the values out: they check
the contract, not this module.
"""

from __future__ import annotations

# Synthesis modes (`mode` of POST /v1/syntheses, SynthesisRequest.mode); the first is the default.
ZERO_SHOT, INSTRUCT, CROSS_LINGUAL = "zero_shot", "instruct", "cross_lingual"
MODES = (ZERO_SHOT, INSTRUCT, CROSS_LINGUAL)
DEFAULT_MODE = MODES[0]

# Output audio formats (`format` of POST /v1/syntheses, common.audio.encode_audio); the first is
# the default. "aac" is AAC in an M4A container.
AUDIO_FORMATS = ("mp3", "aac", "wav")
DEFAULT_AUDIO_FORMAT = AUDIO_FORMATS[0]

# Speech engines (TTS_ENGINE): espeak on the CPU, CosyVoice3 on a GPU; the first is the default.
ESPEAK, COSYVOICE3 = "espeak", "cosyvoice3"
ENGINE_NAMES = (ESPEAK, COSYVOICE3)

# CosyVoice3's text normalisation (COSYVOICE_TEXT_FRONTEND): upstream's wetext with its FST files
# from COSYVOICE_WETEXT_DIR, the ttsfrd package, or none (explicitly off); the first is the default.
COSYVOICE_TEXT_FRONTENDS = ("wetext", "ttsfrd", "none")

# WeChat's mini program versions (WECHAT_MINIPROGRAM_STATE, subscribeMessage.send's
# `miniprogram_state`): the released one, the trial build and the developer build.
MINIPROGRAM_STATES = ("formal", "trial", "developer")

# The `lang` values subscribeMessage.send accepts (WECHAT_LANG); the first is WeChat's default.
WECHAT_LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")

# The audible AIGC label in every output (AIGC_EXPLICIT_LABEL, a task's `aigc_label`): a spoken
# sentence, the "短长短短" tone pattern of GB 45438-2025, or none (only where the operator's user
# agreement assigns labelling to users); the first is the default.
AIGC_VOICE, AIGC_RHYTHM, AIGC_NONE = "voice", "rhythm", "none"
AIGC_LABELS = (AIGC_VOICE, AIGC_RHYTHM, AIGC_NONE)
