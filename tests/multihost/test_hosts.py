"""The multi-host tests' hosts (``tests/testhosts.py``) are what they claim: three machines,
each with an engine of its own reached over SSH, that reach each other's published ports over
their network, and that leave nothing behind. No environment is deployed here (issue 25 builds
on these hosts)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from tests import testhosts

IMAGE = "shipyard-testhosts/busybox:1"
PORT = 8080


def busybox_image_tar() -> bytes:
    """A root filesystem of Debian's static busybox with empty /www and /tmp, for ``docker
    import``: an image built on the spot, with nothing from a registry (the container writes
    its page at start)."""
    binary = shutil.which("busybox")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(binary, arcname="bin/busybox")
        for name in ("www", "tmp"):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hosts():
    problems = testhosts.remove_leftovers()  # an aborted earlier run's
    assert not problems, problems
    with testhosts.TestHosts(3) as made:
        yield made


def test_each_host_has_an_engine_of_its_own_over_ssh(hosts):
    assert len({h.address for h in hosts.hosts}) == 3
    for host in hosts.hosts:
        # SSH lands in the host's own network namespace, and its engine starts empty.
        assert f"inet {host.address}/" in host.ssh("ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert host.ssh("docker", "ps", "-aq").stdout.split() == []
        host.ssh("docker", "network", "create", f"marker-{host.name}")
    for host in hosts.hosts:
        # What one engine made, only that engine has.
        networks = host.ssh("docker", "network", "ls", "--format", "'{{.Name}}'").stdout.split()
        assert [n for n in networks if n.startswith("marker-")] == [f"marker-{host.name}"], (host.name, networks)
        assert host.ssh("docker", "info", "--format", "'{{.DockerRootDir}}'").stdout.strip() == "/var/lib/docker"
    machine = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True,
                             text=True).stdout.split()
    assert not [n for n in machine if n.startswith("marker-")]


def test_a_port_published_on_one_host_is_reached_from_another(hosts):
    server, client = hosts.hosts[1], hosts.hosts[0]
    loaded = subprocess.run(server.ssh_argv("docker", "import", "-", IMAGE), input=busybox_image_tar(),
                            capture_output=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    server.ssh("docker", "run", "-d", "--name", "web", "-p", f"{server.address}:{PORT}:{PORT}", IMAGE,
               "/bin/busybox", "sh", "-c",
               f"'echo served by {server.name} > /www/index.html && exec /bin/busybox httpd -f -p {PORT} -h /www'")
    deadline, answer = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        answer = client.inside(["curl", "-fsS", "--max-time", "2", f"http://{server.address}:{PORT}/"], check=False)
        if answer.returncode == 0:
            break
        time.sleep(0.2)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == f"served by {server.name}"
    # Only the engine of the host that runs it has it.
    assert "web" not in client.ssh("docker", "ps", "--format", "'{{.Names}}'").stdout.split()


def test_removing_the_hosts_leaves_nothing():
    made = testhosts.TestHosts(1)
    with made:
        host = made.hosts[0]
        dockerd = int((host.dir / "dockerd.pid").read_text())
    assert not made.root.exists()
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(made.tag)]
    assert made.tag not in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert made.bridge not in subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    with pytest.raises(ProcessLookupError):
        os.kill(dockerd, 0)
