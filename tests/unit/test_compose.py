"""docker-compose.yml, infra/docker/Dockerfile and .env.example stay consistent and safe.

Schema: ``docker compose config -q`` where the compose CLI works, and always the compose-spec JSON
schema offline (check-jsonschema's vendored copy). Then structural rules in Python. Each rule is a
function returning a list of problems; the mutation tests below break a copy of the file in one
way each and assert the matching rule notices, so a rule that silently stops checking fails.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "infra" / "docker" / "entrypoint.sh"
ENV_EXAMPLE = ROOT / ".env.example"

APP_SERVICES = ("migrate", "web", "worker", "gpu-worker", "beat", "scheduler", "serving")
REQUIRED_ENV = (
    "OFFICINA_DATABASE_URL", "OFFICINA_S3_ENDPOINT", "OFFICINA_S3_ACCESS_KEY",
    "OFFICINA_S3_SECRET_KEY", "OFFICINA_S3_BUCKET", "OFFICINA_BROKER_URL",
    "OFFICINA_SECRET_KEY", "OFFICINA_WEB_HOST", "OFFICINA_WEB_PORT", "OFFICINA_HOME",
)
FIXED_ENV = {"OFFICINA_WEB_HOST": "0.0.0.0", "OFFICINA_WEB_PORT": "8080", "OFFICINA_HOME": "/data"}
SECRET_NAME = re.compile(r"(KEY|PASSWORD|SECRET|TOKEN)$")
# A secret value must be exactly one interpolation without a default: ${NAME} or ${NAME:?message}.
SECRET_VALUE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}")
MINIO_IMAGE = re.compile(r"^quay\.io/minio/minio:RELEASE\.[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9-]+Z@sha256:[0-9a-f]{64}$")
TAGGED = re.compile(r"^(?P<name>[^:@]+(?::[0-9]+/[^:@]+)?):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)(@sha256:[0-9a-f]{64})?$")


def load_compose() -> dict:
    return YAML(typ="safe", pure=True).load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps)


def required_variables(text: str) -> set[str]:
    """Variables the compose file interpolates without a default (``${X}``, ``${X:?msg}``)."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {m.group(1) for m in INTERPOLATION.finditer(code) if m.group(2) in (None, "?", ":?")}


# --- rules: each returns a list of problems -------------------------------------------------


def check_depends_on(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = []
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            if target not in services:
                problems.append(f"{name} depends on missing service {target!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name} waits for {target} to be healthy, but {target} has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                problems.append(f"{name} waits for one-shot {target}, which restarts")
    return problems


def check_app_services(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = [f"app service {n!r} missing" for n in APP_SERVICES if n not in services]
    present = [n for n in APP_SERVICES if n in services]
    if not present:
        return problems
    builds = {n: services[n].get("build") for n in present}
    images = {n: services[n].get("image") for n in present}
    ref_build, ref_image = builds[present[0]], images[present[0]]
    for n in present:
        build = builds[n]
        if not isinstance(build, dict) or build.get("dockerfile") != "infra/docker/Dockerfile":
            problems.append(f"{n} is not built from infra/docker/Dockerfile: {build!r}")
        if build != ref_build or images[n] != ref_image or not images[n]:
            problems.append(f"{n} does not use the same image/build as {present[0]}")
    # Anything else built locally must be that same image too.
    for n, svc in services.items():
        if n not in present and "build" in svc and (svc["build"] != ref_build or svc.get("image") != ref_image):
            problems.append(f"{n} builds a different image")
    return problems


def check_app_env(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = []
    envs = {n: environment(services[n]) for n in APP_SERVICES if n in services}
    for n, env in envs.items():
        for key in REQUIRED_ENV:
            if not env.get(key):
                problems.append(f"{n} lacks {key}")
        for key, value in FIXED_ENV.items():
            if key in env and env[key] != value:
                problems.append(f"{n}: {key}={env[key]!r}, expected {value!r}")
    shared = [{k: env.get(k) for k in REQUIRED_ENV} for env in envs.values()]
    if any(s != shared[0] for s in shared):
        problems.append("app services disagree on OFFICINA_* settings")
    return problems


def check_commands(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = []

    def argv(name: str) -> str:
        cmd = services.get(name, {}).get("command") or []
        return " ".join(cmd) if isinstance(cmd, list) else str(cmd)

    if "officina.web.wsgi:app" not in argv("web") or not argv("web").startswith("gunicorn"):
        problems.append("web must run gunicorn officina.web.wsgi:app")
    for name, queues in (("worker", "cpu,io"), ("gpu-worker", "gpu")):
        cmd = argv(name)
        if not cmd.startswith("celery") or "officina.workers.app" not in cmd:
            problems.append(f"{name} must run celery -A officina.workers.app worker")
        if not re.search(rf"(-Q|--queues)[ =]{re.escape(queues)}(\s|$)", cmd):
            problems.append(f"{name} must consume exactly queues {queues}")
    if not argv("beat").startswith("celery") or " beat" not in argv("beat"):
        problems.append("beat must run celery -A officina.workers.app beat (periodic tasks)")
    if "officina.workers.serving.wsgi:app" not in argv("serving") or not argv("serving").startswith("gunicorn"):
        problems.append("serving must run gunicorn officina.workers.serving.wsgi:app")
    if argv("migrate") not in ("migrate", "officina migrate"):
        problems.append("migrate must run `officina migrate`")
    return problems


def check_gpu(doc: dict) -> list[str]:
    svc = doc.get("services", {}).get("gpu-worker", {})
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
        return ["gpu-worker reserves no nvidia device with capabilities [gpu]"]
    return []


def check_secrets(doc: dict) -> list[str]:
    problems = []
    for name, svc in doc.get("services", {}).items():
        for key, value in environment(svc).items():
            if value is None:
                continue
            if SECRET_NAME.search(key) and not SECRET_VALUE.match(value):
                problems.append(f"{name}: {key} is not a ${{VAR:?...}} interpolation: {value!r}")
            if "://" in value:
                password = urlsplit(value).password
                if password is not None and not SECRET_VALUE.match(password):
                    problems.append(f"{name}: {key} carries a literal password")
    return problems


def check_images(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = []
    if not MINIO_IMAGE.match(str(services.get("minio", {}).get("image", ""))):
        problems.append("minio image must be quay.io/minio/minio:RELEASE.<date>@sha256:<digest>")
    for name, svc in services.items():
        if "build" in svc or "image" not in svc:
            continue
        m = TAGGED.match(str(svc["image"]))
        if not m or m.group("tag") in ("latest", "stable", "edge"):
            problems.append(f"{name}: image {svc['image']!r} is not pinned by a version tag")
    for name, major in (("postgres", "18"), ("redis", "7")):
        image = str(services.get(name, {}).get("image", ""))
        if not re.match(rf"^(docker\.io/(library/)?)?{name}:{major}(\.[0-9]+)*(-[a-z0-9.]+)?(@sha256:[0-9a-f]{{64}})?$", image):
            problems.append(f"{name} image must be {name}:{major}[.x.y]: {image!r}")
    return problems


def check_health_and_volumes(doc: dict) -> list[str]:
    services = doc.get("services", {})
    problems = []
    for name in ("postgres", "redis", "minio", "web"):
        if "healthcheck" not in services.get(name, {}):
            problems.append(f"{name} has no healthcheck")
    hc = " ".join(map(str, services.get("postgres", {}).get("healthcheck", {}).get("test", [])))
    if "pg_isready" not in hc:
        problems.append("postgres healthcheck must use pg_isready")
    hc = " ".join(map(str, services.get("redis", {}).get("healthcheck", {}).get("test", [])))
    if "redis-cli" not in hc or "ping" not in hc:
        problems.append("redis healthcheck must use redis-cli ping")
    hc = " ".join(map(str, services.get("web", {}).get("healthcheck", {}).get("test", [])))
    if "/healthz" not in hc:
        problems.append("web healthcheck must probe /healthz")
    declared = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            if source and not source.startswith((".", "/", "~")) and source not in declared:
                problems.append(f"{name} mounts undeclared volume {source!r}")
    pg_mounts = [v for v in services.get("postgres", {}).get("volumes") or [] if isinstance(v, str)]
    if not any(v.split(":")[1] == "/var/lib/postgresql" and v.split(":")[0] in declared for v in pg_mounts):
        problems.append("postgres 18 needs a named volume at /var/lib/postgresql (not .../data)")
    return problems


RULES = [check_depends_on, check_app_services, check_app_env, check_commands, check_gpu,
         check_secrets, check_images, check_health_and_volumes]


# --- the real file ----------------------------------------------------------------------------


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _dummy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFICINA_", "COMPOSE_"))}
    for var in required_variables(COMPOSE.read_text()):
        env[var] = f"dummy-{var.lower().replace('_', '-')}"
    return env


@pytest.mark.skipif(not _docker_compose_works(), reason="no `docker compose` CLI here; schema checked offline")
def test_docker_compose_config_accepts_the_file(tmp_path):
    # An empty env file keeps a developer's own .env out of the check.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(empty), "config", "-q"],
        cwd=ROOT, env=_dummy_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_matches_compose_spec_schema():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_compose_rule_holds(compose, rule):
    problems = rule(compose)
    assert not problems, "\n".join(problems)


def test_every_required_variable_is_in_env_example():
    required = required_variables(COMPOSE.read_text())
    assert required >= {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "OFFICINA_SECRET_KEY"}
    example = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert required - example == set(), "add these to .env.example"
    text = ENV_EXAMPLE.read_text()
    assert "openssl rand" in text or "secrets.token" in text, ".env.example must tell users to generate secrets"


def test_dockerfile_pins_torch_and_uses_constraints():
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    runs = "\n".join(instructions)
    assert re.search(r"^FROM python:3\.11\.[0-9]+-slim\S*(\s|$)", runs, re.M), "base must be a pinned python:3.11.x-slim"
    assert re.search(r"pip install[^\n]*[\"']?torch==2\.13\.0[\"']?", runs), "torch must be pinned to 2.13.0"
    assert "download.pytorch.org/whl/cpu" in runs, "the default torch must be the CPU build"
    assert re.search(r"pip install[^\n]*-c constraints\.txt \.", runs), "install the project with -c constraints.txt"
    assert "ARG TORCH_INDEX_URL" in runs, "a build arg must select a CUDA torch for GPU hosts"
    users = re.findall(r"^USER\s+(\S+)", runs, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as a non-root user"
    entry = re.search(r"^ENTRYPOINT\s+(.*)$", runs, re.M)
    assert entry, "ENTRYPOINT missing"
    assert "officina" in entry.group(1)
    script = ENTRYPOINT.read_text()
    assert re.search(r"exec officina \"\$@\"", script), "the entrypoint must hand arguments to the officina CLI"
    assert os.access(ENTRYPOINT, os.X_OK)


def test_dockerignore_keeps_secrets_out_of_the_build_context():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in lines and ".git/" in lines and ".venv/" in lines


# --- mutation tests: each rule notices the breakage it exists for ------------------------------


def _services(doc):
    return doc["services"]


MUTATIONS = {
    "depends_on_missing": (check_depends_on, lambda d: _services(d)["web"]["depends_on"].update({"db": {"condition": "service_started"}})),
    "healthy_without_healthcheck": (check_depends_on, lambda d: _services(d)["redis"].pop("healthcheck")),
    "other_image": (check_app_services, lambda d: _services(d)["worker"].update(image="officina:other")),
    "other_dockerfile": (check_app_services, lambda d: _services(d)["gpu-worker"].update(build={"context": ".", "dockerfile": "Dockerfile.gpu"})),
    "missing_service": (check_app_services, lambda d: _services(d).pop("gpu-worker")),
    "env_key_missing": (check_app_env, lambda d: _services(d)["worker"].update(environment={k: v for k, v in environment(_services(d)["worker"]).items() if k != "OFFICINA_BROKER_URL"})),
    "env_loopback_bind": (check_app_env, lambda d: _services(d)["web"].update(environment={**environment(_services(d)["web"]), "OFFICINA_WEB_HOST": "127.0.0.1"})),
    "worker_takes_gpu_queue": (check_commands, lambda d: _services(d)["worker"].update(command=["celery", "-A", "officina.workers.app", "worker", "-Q", "cpu,gpu,io"])),
    "serving_runs_web": (check_commands, lambda d: _services(d)["serving"].update(command=["gunicorn", "officina.web.wsgi:app"])),
    "no_gpu_reservation": (check_gpu, lambda d: _services(d)["gpu-worker"].pop("deploy")),
    "gpu_wrong_driver": (check_gpu, lambda d: _services(d)["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0].update(driver="amd")),
    "literal_secret": (check_secrets, lambda d: _services(d)["web"].update(environment={**environment(_services(d)["web"]), "OFFICINA_SECRET_KEY": "hunter2"})),
    "secret_with_default": (check_secrets, lambda d: _services(d)["postgres"]["environment"].update(POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-postgres}")),
    "literal_password_in_url": (check_secrets, lambda d: _services(d)["migrate"].update(environment={**environment(_services(d)["migrate"]), "OFFICINA_DATABASE_URL": "postgresql://officina:hunter2@postgres/officina"})),
    "minio_tag_only": (check_images, lambda d: _services(d)["minio"].update(image="quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z")),
    "minio_docker_hub": (check_images, lambda d: _services(d)["minio"].update(image="minio/minio:latest")),
    "postgres_latest": (check_images, lambda d: _services(d)["postgres"].update(image="postgres:latest")),
    "postgres_untagged": (check_images, lambda d: _services(d)["postgres"].update(image="postgres")),
    "redis_major_8": (check_images, lambda d: _services(d)["redis"].update(image="redis:8.2")),
    "no_web_healthcheck": (check_health_and_volumes, lambda d: _services(d)["web"].pop("healthcheck")),
    "undeclared_volume": (check_health_and_volumes, lambda d: d["volumes"].pop("redis-data")),
    "postgres_old_data_path": (check_health_and_volumes, lambda d: _services(d)["postgres"].update(volumes=["postgres-data:/var/lib/postgresql/data"])),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_rule_catches_breakage(compose, mutation):
    rule, mutate = MUTATIONS[mutation]
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert rule(broken), f"{rule.__name__} did not notice {mutation}"


def test_schema_check_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: sometimes-maybe\n    bogus_key: 1\n", 1))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
