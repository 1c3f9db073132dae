"""Images from the deploying machine to hosts that cannot reach any registry of the internet
(issue 25), on the `multi` inventory's test hosts: the registry's own image shipped to h1 over
SSH, the registry run there from its rendered compose service and secret files, an image pushed
by this machine's engine through an SSH tunnel, and h2's engine — trusting the registry's CA and
logged in as the deploy would make it — pulling it by the registry's name: the same image.

The rollout does not yet do this by itself (docs/registry.md): this is the path it will take.
Needs the registry's image on this machine's engine: `make test` runs it after the ci rollout,
which builds it."""

from __future__ import annotations

import io
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest

from shipyard import commands, topology
from shipyard.components.registry import certificates, client
from shipyard.components.registry import transfer
from shipyard.apply import image_ship
from shipyard.inventory import load_environment
from shipyard.render import render_host, secret_variables
from shipyard.secretstore import load_or_create, read_held
from tests import testhosts

REPO = Path(__file__).resolve().parents[2]
REGISTRY_IMAGE = "shipyard/registry:2.8"


@pytest.fixture(scope="module")
def settings():
    if image_ship.local_id(REGISTRY_IMAGE) is None:
        pytest.skip(f"{REGISTRY_IMAGE} is not on this machine's engine: `make up ENV=ci` builds it "
                    "(make test runs these tests after the ci rollout)")
    return load_environment(REPO, "multi", {})


@pytest.fixture(scope="module")
def hosts(settings):
    with testhosts.multi_hosts() as made:
        yield made


def _feed(argv: list[str], data: bytes, timeout: float = 120) -> None:
    """``argv`` with ``data`` on its stdin (bytes: testhosts.run speaks text)."""
    done = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, (argv, done.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def registry(settings, hosts):
    """The registry on h1, as its rendered compose service runs it, with its secret files."""
    from shipyard.apply import private_files  # pyinfra's layer: data and argv only here
    from shipyard.apply.rollout import project_files, secret_files

    h1 = settings.hosts_with_role("registry")[0]
    assert image_ship.ship(h1, REGISTRY_IMAGE) is True and image_ship.ship(h1, REGISTRY_IMAGE) is False
    values = load_or_create(REPO, settings.name, generate_missing=True)
    project = commands.project_dir(settings.deploy_root, settings.name)
    on_h1 = tuple(i for i in topology.build(settings).instances_on(h1) if i.component.name == "registry")
    wanted = project_files(project, render_host(settings, h1)) + secret_files(
        project, on_h1, values, variables=secret_variables(settings, h1))
    host = hosts[h1.address]
    _feed(host.ssh_argv(*private_files.extract_argv("-")), private_files.archive(wanted))
    host.ssh("docker", "compose", "--project-directory", project, "-p", settings.compose_project,
             "up", "-d", "--no-deps", "--wait", "--wait-timeout", "120", "registry", timeout=180)
    return values[certificates.PASSWORD].value


def test_an_image_built_here_reaches_a_host_through_the_registry(settings, hosts, registry, tmp_path):
    h2 = next(h for h in settings.hosts if h.name == "h2")
    token = secrets.token_hex(4)
    ref = f"shipyard/multihost-probe:{token}"
    _feed(["docker", "import", "-", ref], _probe_tar(token))
    made = image_ship.local_id(ref)
    try:
        lines = transfer.push(settings, [ref], registry)
        assert len(lines) == 1 and lines[0].startswith(f"pushed {ref} as 10.231.250.11:5000/shipyard/multihost-probe:"), lines
        # h2 as the deploy would make it: the CA trusted for the registry's name, logged in, pulled.
        for path, content in client.trust_files(settings, read_held(REPO, settings.name, certificates.CA_CERT).value).items():
            _feed(hosts[h2.address].ssh_argv("sh", "-c", f"'mkdir -p {Path(path).parent} && cat > {path}'"), content)
        _feed(hosts[h2.address].ssh_argv(*client.login_argv(settings)), registry.encode())
        for argv in client.pull_argvs(settings, ref):
            hosts[h2.address].ssh(*argv, timeout=120)
        assert image_ship.remote_id(h2, ref) == made
        # Without the CA its engine refuses the registry's certificate.
        h3 = next(h for h in settings.hosts if h.name == "h3")
        refused = hosts[h3.address].ssh("docker", "pull", client.pushed_ref(settings, ref), check=False, timeout=120)
        assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr
        # h2's trust and login are its own (tests/testhosts.py): none reached this machine.
        assert not Path(f"/etc/docker/certs.d/{client.endpoint(settings)}").exists()
        machine_logins = Path.home() / ".docker" / "config.json"
        assert not machine_logins.exists() or client.endpoint(settings) not in machine_logins.read_text()
    finally:
        testhosts.run(["docker", "image", "rm", ref], check=False)


def _probe_tar(token: str) -> bytes:
    """A one-file image made on the spot (``docker import``): nothing from any other registry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = f"shipyard multihost probe {token}\n".encode()
        entry = tarfile.TarInfo("probe.txt")
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()
