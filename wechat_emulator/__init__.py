"""A WeChat server API emulator: a real HTTP server with WeChat's shapes and error codes.

Tests and `make up` run the gateway against it instead of api.weixin.qq.com (STYLE.md §9: the one
outside service we emulate). It serves jscode2session, stable_token, msg_sec_check,
media_check_async (with signed, optionally encrypted verdict pushes) and subscribeMessage.send,
plus `/_emulator/` endpoints to script errors and verdicts. Run it with `python -m wechat_emulator`.
"""

from wechat_emulator.app import EMULATOR_KEY, Emulator, EmulatorConfig, create_emulator_app

__all__ = ["EMULATOR_KEY", "Emulator", "EmulatorConfig", "create_emulator_app"]
