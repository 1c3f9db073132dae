import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def redis_role(container: str, check: bool = True) -> str:
    """What the Redis node in ``container`` says it is: "master" or "slave" (authenticated
    with its own secret file)."""
    return subprocess.run(["docker", "exec", container, "sh", "-c",
                           "REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf) "
                           "redis-cli role | head -1"], capture_output=True, text=True, check=check).stdout.strip()


def run_shipyard(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_") or k == "SHIPYARD_AGE_IDENTITY_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "shipyard", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def project_gateway(settings, service: str) -> str:
    """The host's address on the project network, as ``service``'s container sees it: where a
    receiver a test runs (alerts, webhooks) is reached from inside, and nothing leaves the machine."""
    container = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={settings.compose_project}",
                                "--filter", f"label=com.docker.compose.service={service}"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert container, f"no {service} container runs in {settings.name}: make up ENV={settings.name}"
    return subprocess.run(["docker", "inspect", container[0], "--format",
                           "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def container_states(project: str) -> dict[str, str]:
    """container name → id + start time: changes when a container is recreated or restarted."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    fmt = "{{.Name}} {{.Id}} {{.State.StartedAt}}"
    lines = subprocess.run(["docker", "inspect", "--format", fmt, *out], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return {line.split()[0]: line for line in lines}


@pytest.fixture(scope="session")
def env_name(request) -> str:
    return request.config.getoption("--shipyard-env")


def pytest_configure(config):
    config.addinivalue_line("markers", "after_all: runs after every other e2e test (it checks what the whole run left)")


def pytest_collection_modifyitems(items):
    """Tests marked ``after_all`` last, in their own order (a stable sort keeps the others' order)."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def patroni_settings(env_name: str):
    """The environment's settings, or a skip unless it has a PostgreSQL node to fail over to."""
    from shipyard.components.postgres.instances import node_names as postgres_nodes
    from shipyard.inventory import load_environment

    loaded = load_environment(REPO, env_name)
    if len(postgres_nodes(loaded)) < 2:
        pytest.skip("one PostgreSQL node: nothing to fail over to")
    return loaded
