"""docker-compose.yml, read without Docker: it parses, names only real configuration and real files, and
describes the production topology (three-node NATS cluster, MinIO, gateway, CPU and GPU workers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "CONTRACT.md"

APP_SERVICES = {"gateway", "worker", "worker-gpu"}
ONE_SHOT = {"minio-init"}
NATS_NODES = ("nats-1", "nats-2", "nats-3")
# Read by the images in compose, not by our code.
COMPOSE_ONLY_ENV = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
# Variables the contract has gained whose feature is still an open issue: listed by name so that the
# rest of the contract stays checked, and pruned as each lands (the test fails while one here is wired).
NOT_YET_BUILT: dict[str, str] = {}

_READ = re.compile(
    r"""(?:\benv\.get|\benviron\.get|\bgetenv|\btext|\binteger|\bboolean|\bport|_non_negative_float)"""
    r"""\(\s*["']([A-Z][A-Z0-9_]+)["']"""
)
_SUBSCRIPT = re.compile(r"""\benviron\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]""")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}; `$${` is an escaped dollar.
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])[^}]*)?\}")


def _names_read(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        source = path.read_text(encoding="utf-8")
        names |= set(_READ.findall(source)) | set(_SUBSCRIPT.findall(source))
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def settings_names() -> set[str]:
    return _names_read([REPO / "common" / "config.py"])


@pytest.fixture(scope="module")
def code_names() -> set[str]:
    files = [REPO / "common" / "config.py"]
    for package in ("common", "events", "storage", "synth_worker", "wechat_adapter"):
        files += sorted((REPO / package).rglob("*.py"))
    return _names_read(files)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def _volume(volume: str | dict) -> tuple[str, str]:
    """(source, target) of a volume entry; the short form's `:` inside `${VAR:-default}` is no separator."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    hidden = _INTERPOLATION.sub(lambda m: m.group(0).replace(":", "\0"), volume)
    source, target, *_ = (part.replace("\0", ":") for part in hidden.split(":"))
    return source, target


def _env(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # ["NAME=value", …]
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def test_scanner_sees_the_settings(settings_names: set[str]) -> None:
    # Guards the regex: if Settings.from_env changes shape, this fails instead of the checks going vacuous.
    assert {"NATS_URL", "NATS_REPLICAS", "S3_ENDPOINT", "SESSION_SECRET", "ENGINE_DELAY_S"} <= settings_names
    assert len(settings_names) >= 35


def test_long_running_services_restart_and_report_health(services: dict[str, dict]) -> None:
    assert set(services) >= APP_SERVICES | ONE_SHOT | set(NATS_NODES) | {"minio"}
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"


def test_one_shot_init_gates_the_apps(services: dict[str, dict]) -> None:
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["minio-init"] == {"condition": "service_completed_successfully"}, name
        for node in NATS_NODES:
            assert depends[node] == {"condition": "service_healthy"}, name
    assert services["minio-init"]["depends_on"]["minio"] == {"condition": "service_healthy"}


def test_app_environment_names_are_real(services: dict[str, dict], code_names: set[str]) -> None:
    for name, service in services.items():
        unknown = set(_env(service)) - code_names - COMPOSE_ONLY_ENV
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_every_setting_is_wired_to_every_app(services: dict[str, dict], settings_names: set[str]) -> None:
    # Settings, plus anything the entry points read beside it (none today: LOG_FORMAT is a setting).
    entry_points = [REPO / "wechat_adapter" / "__main__.py", REPO / "synth_worker" / "__main__.py"]
    wanted = settings_names | _names_read([p for p in entry_points if p.exists()])
    for name in APP_SERVICES:
        missing = wanted - set(_env(services[name]))
        assert not missing, f"{name} lacks {sorted(missing)}"
    assert _env(services["gateway"])["ENGINE_DELAY_S"] == "0"


def _contract_names() -> set[str]:
    text = CONTRACT.read_text(encoding="utf-8")
    section = text.split("\n## 2.", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


@pytest.mark.skipif(not CONTRACT.exists(), reason="shared/CONTRACT.md is not beside this checkout")
def test_every_contract_variable_reaches_the_apps(services: dict[str, dict]) -> None:
    contract = _contract_names()
    assert {"NATS_URL", "S3_BUCKET", "WECHAT_PUSH_AES_KEY", "TEXT_MAX_CHARS"} <= contract
    assert set(NOT_YET_BUILT) <= contract, "NOT_YET_BUILT names a variable the contract no longer has"
    for name in APP_SERVICES:
        wired = set(_env(services[name]))
        missing = contract - wired - set(NOT_YET_BUILT)
        assert not missing, f"{name} lacks the contract's variables {sorted(missing)}"
        built = wired & set(NOT_YET_BUILT)
        assert not built, f"{sorted(built)} are wired now: take them out of NOT_YET_BUILT"


def test_build_files_and_bind_mounts_exist(compose: dict, services: dict[str, dict]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = REPO / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source, _ = _volume(volume)
            if source.startswith(("/", ".", "~", "$")):
                if "$" not in source:  # variable sources are checked with the other interpolations
                    assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"


def test_dockerfiles_copy_only_existing_paths() -> None:
    for dockerfile in (REPO / "ops" / "Dockerfile", REPO / "ops" / "docker" / "gpu.Dockerfile"):
        copies = re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile.read_text(encoding="utf-8"), re.M)
        assert copies, dockerfile
        for line in copies:
            for source in line.split()[:-1]:
                assert (REPO / source).exists(), f"{dockerfile.name} copies missing {source}"
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", "var", ".git", "tests", "ops/bench/results", ".env", "models"} <= ignored


def test_nats_is_a_three_node_cluster(compose: dict, services: dict[str, dict]) -> None:
    nats = sorted(name for name in services if name.startswith("nats"))
    assert nats == list(NATS_NODES)
    routes = {f"nats://{node}:6222" for node in NATS_NODES}
    volumes = set()
    for node in NATS_NODES:
        command = services[node]["command"]
        option = dict(zip(command, [*command[1:], None], strict=True))
        assert "-js" in command and option["-sd"] == "/data", node
        assert option["--server_name"] == node
        assert option["--cluster_name"] == "voicerelay"
        assert option["--cluster"] == "nats://0.0.0.0:6222"
        assert set(option["--routes"].split(",")) == routes, node
        assert option["-m"] == "8222"
        assert "8222" in " ".join(services[node]["healthcheck"]["test"])
        (volume,) = services[node]["volumes"]
        assert volume.endswith(":/data")
        volumes.add(volume.split(":")[0])
    assert len(volumes) == 3 and volumes <= set(compose["volumes"])
    for name in APP_SERVICES:
        env = _env(services[name])
        assert set(env["NATS_URL"].split(",")) == {f"nats://{node}:4222" for node in NATS_NODES}
        assert env["NATS_REPLICAS"] == "3"


def test_gpu_workers_reserve_a_gpu_behind_a_profile(services: dict[str, dict]) -> None:
    gpu = {name for name, s in services.items() if _env(s).get("TTS_ENGINE") == "cosyvoice3"}
    assert gpu == {"worker-gpu"}
    for name in gpu:
        service = services[name]
        assert service.get("profiles"), f"{name} must be opt-in"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
        model_dir = _env(service)["COSYVOICE_MODEL_DIR"]
        targets = [_volume(v)[1] for v in service["volumes"]]
        assert any(model_dir.startswith(t.rstrip("/") + "/") for t in targets), "model dir is not mounted"
        assert service["build"]["dockerfile"] == "ops/docker/gpu.Dockerfile"
        assert service["stop_grace_period"] == "40s"
    for name in APP_SERVICES - gpu:
        assert _env(services[name])["TTS_ENGINE"] == "espeak"
        assert not services[name].get("profiles")
    assert services["worker"]["stop_grace_period"] == "40s"


def test_interpolated_variables_are_defined(env_example: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    references = _INTERPOLATION.findall(text)
    assert references
    for name, operator in references:
        if operator in {"", "?", ":?"}:  # no default: the deployer must set it
            assert name in env_example, f"${{{name}}} has no default and is not in .env.example"
    used = {name for name, _ in references}
    assert set(env_example) <= used, f".env.example sets unused {sorted(set(env_example) - used)}"


def test_env_example_has_valid_shapes(env_example: dict[str, str], settings_names: set[str]) -> None:
    assert re.fullmatch(r"wx[0-9a-f]{16}", env_example["WECHAT_APPID"])
    assert len(env_example["WECHAT_PUSH_AES_KEY"]) == 43
    assert env_example["WECHAT_MINIPROGRAM_STATE"] in {"formal", "trial", "developer"}
    assert env_example["PUBLIC_BASE_URL"].startswith("https://")
    # The example parses as real settings (compose adds the fixed values of x-app-env).
    from common.config import Settings

    Settings.from_env(env_example)
