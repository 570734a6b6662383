"""docker-compose.yml read as Compose would (no Docker engine runs here): its
services, the one image they share, every `worker ...` command against the
real click CLI, the environment against what the code reads, health checks,
start order, and host ports that leave a local 5432 and 5000 alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from worker.cli import cli

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SERVICES = ("mlflow", "migrate", "worker")

# ${NAME:-default}, ${NAME-default}, ${NAME}; "$$" is a literal "$".
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's interpolation with an empty environment: the defaults."""
    env = env or {}
    if isinstance(value, str):
        text = _VARIABLE.sub(lambda m: env.get(m.group(1), m.group(2) or ""),
                             value.replace("$$", "\0"))
        return text.replace("\0", "$")
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_the_services_and_the_one_image_they_share(services):
    assert set(services) == {"db", "mlflow", "migrate", "worker"}
    assert services["db"]["image"].startswith("postgres:16")
    images = {services[name]["image"] for name in IMAGE_SERVICES}
    builds = [services[name]["build"] for name in IMAGE_SERVICES]
    assert images == {"pg-retrain:local"}
    assert all(b == builds[0] for b in builds), "one build definition for the shared image"
    assert (ROOT / builds[0]["context"] / builds[0]["dockerfile"]).is_file()
    for name in IMAGE_SERVICES:  # installed at build time, not on every `up`
        assert "pip" not in " ".join(command_of(services[name]))


def test_the_dockerfile_installs_pg_retrain_at_build_time():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-deps \.", dockerfile, re.MULTILINE)
    # What the wheel force-includes (pyproject) must be in the build context.
    for copied in ("pyproject.toml", "README.md", "alembic.ini", "migrations", "sql", "worker"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", dockerfile, re.MULTILINE), copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"worker", "migrations", "sql", "README.md", "alembic.ini"} & set(ignored)
    assert "USER pgretrain" in dockerfile


def worker_commands(services) -> list[list[str]]:
    commands = []
    for service in services.values():
        if "command" in service:
            command = command_of(service)
            if command[0] == "worker":
                commands.append(command[1:])
    return commands


def test_every_worker_command_is_a_command_of_the_cli(services):
    commands = worker_commands(services)
    assert ["migrate"] in commands
    assert any(c[-1] == "listen" for c in commands)
    for args in commands:
        # --help stops each command before it runs, after click has parsed
        # the group's options, resolved each subcommand and refused any
        # unknown option.
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        usage = result.output.splitlines()[0]
        assert "COMMAND [ARGS]" not in usage, f"{args} names a group, not a command"


def names_the_code_reads() -> set[str]:
    """Environment variables read by click options and by the worker package."""
    names = set()

    def walk(command):
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(cli)
    pattern = re.compile(r"""os\.(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["']([A-Z0-9_]+)["']""")
    for source in (ROOT / "worker").glob("*.py"):
        names.update(pattern.findall(source.read_text()))
    return names


def test_the_environment_is_what_the_code_reads(services):
    read = names_the_code_reads()
    assert {"DATABASE_URL", "MLFLOW_TRACKING_URI"} <= read
    for name in ("migrate", "worker"):
        env = environment_of(services[name])
        assert set(env) <= read, f"{name}: {set(env) - read} are read by nothing"
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert "@db:5432/" in env["DATABASE_URL"]
    assert environment_of(services["worker"])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_mlflow_keeps_its_runs_in_its_own_postgresql_database(services):
    command = command_of(services["mlflow"])
    assert command[:2] == ["mlflow", "server"]
    options = dict(zip(command[2::1], command[3::1]))
    backend = options["--backend-store-uri"]
    assert backend.startswith("postgresql+psycopg://") and "@db:5432/mlflow" in backend
    assert "/pgretrain" not in backend
    assert "--serve-artifacts" in command
    destination = options["--artifacts-destination"]
    assert any(v.endswith(f":{destination}") for v in services["mlflow"]["volumes"])
    assert options["--port"] == "5000" and options["--host"] == "0.0.0.0"
    assert "mlflow:*" in options["--allowed-hosts"].split(",")
    # Every option is one of the installed MLflow's (its CLI is click too).
    from mlflow.cli import cli as mlflow_cli

    result = CliRunner().invoke(mlflow_cli, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output
    # The init script creates it from the db service's MLFLOW_DB.
    assert environment_of(services["db"])["MLFLOW_DB"] == "mlflow"
    assert any(v.startswith("./docker/initdb:/docker-entrypoint-initdb.d")
               for v in services["db"]["volumes"])
    assert (ROOT / "docker" / "initdb" / "10-mlflow-database.sh").is_file()


def test_health_checks_and_start_order(services):
    for name in ("db", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])

    def condition(service, on):
        return services[service]["depends_on"][on]["condition"]

    assert condition("mlflow", "db") == "service_healthy"
    assert condition("migrate", "db") == "service_healthy"
    assert condition("worker", "migrate") == "service_completed_successfully"
    assert condition("worker", "mlflow") == "service_healthy"


def host_ports(services) -> dict[str, int]:
    ports = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            parts = str(mapping).split(":")
            assert len(parts) >= 2, f"{name}: {mapping} publishes a random host port"
            ports[f"{name}:{parts[-1]}"] = int(parts[-2])
    return ports


def test_host_ports_leave_a_local_postgresql_and_mlflow_alone(services):
    ports = host_ports(services)
    assert set(ports) == {"db:5432", "mlflow:5000"}
    assert not {5432, 5000} & set(ports.values())
    assert "ports" not in services["worker"]  # so that `--scale worker=3` works
    assert "container_name" not in services["worker"]


def test_settings_come_from_the_environment():
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = interpolate(raw, {"PGRETRAIN_DB_PORT": "6543", "POSTGRES_PASSWORD": "s3cret",
                                 "PGRETRAIN_LOG_LEVEL": "debug"})["services"]
    assert host_ports(services)["db:5432"] == 6543
    assert ":s3cret@db:5432/" in environment_of(services["worker"])["DATABASE_URL"]
    assert environment_of(services["db"])["POSTGRES_PASSWORD"] == "s3cret"
    assert "debug" in command_of(services["worker"])
