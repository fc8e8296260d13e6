"""The published style presets: what `instruct` may name, and how engines phrase it.

CosyVoice3's official instructions (upstream's `instruct_list`) cover 17 dialects, emotions, speed and
volume.
Only these ids are accepted, so user text never becomes prompt markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PresetKind(StrEnum):
    DIALECT = "dialect"
    EMOTION = "emotion"
    SPEED = "speed"
    VOLUME = "volume"


@dataclass(frozen=True, slots=True)
class Preset:
    id: str
    name: str  # shown to users
    kind: PresetKind
    # The instruction CosyVoice3 was trained on, verbatim from upstream's `instruct_list`
    # (cosyvoice/utils/common.py): other wordings are understood less reliably.
    instruction: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "kind": str(self.kind)}


def _dialect(preset_id: str, region: str, name: str) -> Preset:
    return Preset(preset_id, name, PresetKind.DIALECT, f"请用{region}话表达。")


PRESETS: tuple[Preset, ...] = (
    _dialect("guangdong", "广东", "粤语（广东话）"),
    _dialect("dongbei", "东北", "东北话"),
    _dialect("gansu", "甘肃", "甘肃话"),
    _dialect("guizhou", "贵州", "贵州话"),
    _dialect("henan", "河南", "河南话"),
    _dialect("hubei", "湖北", "湖北话"),
    _dialect("hunan", "湖南", "湖南话"),
    _dialect("jiangxi", "江西", "江西话"),
    _dialect("minnan", "闽南", "闽南话"),
    _dialect("ningxia", "宁夏", "宁夏话"),
    _dialect("shanxi", "山西", "山西话"),
    _dialect("shaanxi", "陕西", "陕西话"),
    _dialect("shandong", "山东", "山东话"),
    _dialect("shanghai", "上海", "上海话"),
    _dialect("sichuan", "四川", "四川话"),
    _dialect("tianjin", "天津", "天津话"),
    _dialect("yunnan", "云南", "云南话"),
    Preset("happy", "开心", PresetKind.EMOTION, "请非常开心地说一句话。"),
    Preset("sad", "伤心", PresetKind.EMOTION, "请非常伤心地说一句话。"),
    Preset("angry", "生气", PresetKind.EMOTION, "请非常生气地说一句话。"),
    Preset("faster", "快一点", PresetKind.SPEED, "请用尽可能快地语速说一句话。"),
    Preset("slower", "慢一点", PresetKind.SPEED, "请用尽可能慢地语速说一句话。"),
    Preset("louder", "大声一点", PresetKind.VOLUME, "Please say a sentence as loudly as possible."),
    Preset("softer", "小声一点", PresetKind.VOLUME, "Please say a sentence in a very soft voice."),
)

PRESETS_BY_ID: dict[str, Preset] = {p.id: p for p in PRESETS}
