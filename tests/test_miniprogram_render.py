"""The <task-result> component rendered from its own WXML by WeChat's template engine.

tests/miniprogram/render.js loads the component with miniprogram-simulate (j-component over jsdom, from
the root package.json like the type check, installed the same way) and checks what shows while the
result streams and once it is done, and that taps reach the handlers. Pages are not rendered this way:
j-component renders components only (Page() is not one), and the pages are driven through their WXML
bindings by tests/test_miniprogram.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from test_miniprogram_types import ensure_node_modules

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "tests" / "miniprogram" / "render.js"
TIMEOUT_S = 60


def test_the_task_result_renders_the_stream_and_the_result() -> None:
    ensure_node_modules()
    node = shutil.which("node")
    assert node is not None  # ensure_node_modules skips without npm, which comes with node
    done = subprocess.run(
        [node, str(RENDER), str(ROOT / "miniprogram")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    assert done.returncode == 0 and report.get("ok"), (
        f"render.js: {report.get('error')}\nstderr: {done.stderr[-2000:]}"
    )
    assert len(report["checks"]) >= 5, report
