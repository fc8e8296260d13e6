"""The mini program's JavaScript type-checked against WeChat's official typings.

`tsc -p tsconfig.json` (allowJs, checkJs, noEmit) over miniprogram/**/*.js with
miniprogram-api-typings: a misspelt wx API, a wrong option type or a handler reading a field it never
set fails here, before anyone opens WeChat DevTools. typescript and the typings are pinned exactly in
package.json and package-lock.json and installed with `npm ci` into the repository's git-ignored
node_modules/ when missing or stale. Skipped, saying why, only where npm is not installed or the npm
registry cannot be reached; any other failure fails, with tsc's diagnostics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tsconfig.json"
LOCK = ROOT / "package-lock.json"
NODE_MODULES = ROOT / "node_modules"
NPM, NPX = shutil.which("npm"), shutil.which("npx")
INSTALL_TIMEOUT_S = 300
TSC_TIMEOUT_S = 180
# What npm prints when it cannot reach the registry at all (no network, a DNS failure, a proxy down).
UNREACHABLE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"socket hang up|network request to .* failed|code E50[234]"
)


def _stale_packages() -> list[str]:
    """Packages of package-lock.json that node_modules/ lacks, or holds at another version."""
    locked = json.loads(LOCK.read_text(encoding="utf-8"))["packages"]
    stale = []
    for where, entry in locked.items():
        if not where.startswith("node_modules/") or entry.get("optional"):
            continue
        installed = ROOT / where / "package.json"
        version = json.loads(installed.read_text(encoding="utf-8"))["version"] if installed.is_file() else ""
        if version != entry["version"]:
            stale.append(f"{where.removeprefix('node_modules/')}@{entry['version']}")
    return stale


def ensure_node_modules() -> None:
    """The root package.json's devDependencies, exactly as locked (`npm ci` when anything differs)."""
    if NPM is None or NPX is None:
        pytest.skip("npm is not installed: the mini program's JS cannot be checked (install Node.js 18+)")
    if not _stale_packages():
        return
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and UNREACHABLE.search(output):
        pytest.skip(f"npm ci could not reach the npm registry: {output[-500:]}")
    assert done.returncode == 0, f"npm ci failed:\n{output[-3000:]}"
    assert not _stale_packages(), f"still missing after npm ci: {_stale_packages()}"


def _tsc(*args: str) -> subprocess.CompletedProcess[str]:
    # `--no`: never download a tsc; `--`: `-p` is tsc's option, not npx's --package.
    return subprocess.run(
        [str(NPX), "--no", "--", "tsc", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TSC_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def typescript() -> None:
    ensure_node_modules()


def test_the_config_checks_every_file_of_the_mini_program(typescript: None) -> None:
    shown = _tsc("-p", str(CONFIG), "--showConfig")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    config = json.loads(shown.stdout)
    options = config["compilerOptions"]
    assert (options["allowJs"], options["checkJs"], options["noEmit"]) == (True, True, True)
    assert options["types"] == ["miniprogram-api-typings"]
    checked = {(ROOT / name).resolve() for name in config["files"]}
    sources = {path.resolve() for path in (ROOT / "miniprogram").rglob("*.js")}
    assert sources and checked == sources


def test_the_mini_program_type_checks_against_the_official_typings(typescript: None) -> None:
    checked = _tsc("-p", str(CONFIG), "--pretty", "false")
    diagnostics = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0, f"tsc -p {CONFIG.name} found problems:\n{diagnostics}"


def test_the_typings_catch_a_wrong_wx_call(typescript: None, tmp_path: Path) -> None:
    """The check has teeth: a wx call with a wrong option type fails (TS2322), which it would not if
    `wx` were untyped (TS2304 "cannot find name") or the typings were not loaded."""
    wrong = tmp_path / "wrong.js"
    wrong.write_text("wx.showToast({ title: 42 });\n", encoding="utf-8")
    config = tmp_path / "tsconfig.json"
    # Outside the repository, type packages are looked up in its node_modules/ all the same.
    options = {"typeRoots": [str(NODE_MODULES)]}
    config.write_text(
        json.dumps(
            {"extends": str(CONFIG), "compilerOptions": options, "include": [], "files": [str(wrong)]}
        ),
        encoding="utf-8",
    )
    checked = _tsc("-p", str(config), "--pretty", "false")
    diagnostics = checked.stdout + checked.stderr
    assert checked.returncode != 0, "tsc accepted wx.showToast({title: 42})"
    assert "TS2322" in diagnostics and "TS2304" not in diagnostics, diagnostics
