"""The dependency rules of docs/ARCHITECTURE.md that import-linter cannot state, plus the contracts
themselves: run here too, so `pytest` alone also fails when a layer is crossed."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "wechat_adapter"
# The gateway's top three layers: the only modules that may touch aiohttp's server side.
WEB_LAYERS = ("__main__.py", "app.py", "views", "http")


def imports_aiohttp_web(path: Path) -> list[int]:
    """Line numbers where the module imports aiohttp's `web` (server) module, in any spelling."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text())) if _is_aiohttp_web_import(node)]


def _is_aiohttp_web_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        return module.startswith("aiohttp.web") or (
            module == "aiohttp" and any(alias.name == "web" for alias in node.names)
        )
    if isinstance(node, ast.Import):
        return any(alias.name.startswith("aiohttp.web") for alias in node.names)
    return False


def domain_modules() -> list[Path]:
    return [
        path for path in sorted(GATEWAY.rglob("*.py")) if path.relative_to(GATEWAY).parts[0] not in WEB_LAYERS
    ]


def test_domain_code_never_imports_aiohttp_web() -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in domain_modules()
        if (lines := imports_aiohttp_web(path))
    }
    assert not offenders, f"only {WEB_LAYERS} of wechat_adapter may import aiohttp.web: {offenders}"


def test_the_check_sees_every_spelling(tmp_path: Path) -> None:
    for source in ("from aiohttp import web", "from aiohttp.web import Request", "import aiohttp.web"):
        module = tmp_path / "m.py"
        module.write_text(source + "\n")
        assert imports_aiohttp_web(module) == [1], source
    (tmp_path / "m.py").write_text("import aiohttp\nfrom aiohttp import ClientSession\n")
    assert imports_aiohttp_web(tmp_path / "m.py") == []


def test_the_domain_is_not_empty() -> None:
    names = {path.stem for path in domain_modules()}
    assert {"submission", "enrolment", "login", "notifier", "review", "context"} <= names


def test_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports is not installed: `make install` installs the dev dependencies")
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
