"""The `multi` environment's hosts reached as a deploy reaches them (issue 25): the three test
hosts at the inventory's fixed addresses, over SSH with the inventory's key and known hosts —
pyinfra's host data, which the controller's own ssh and its tunnel to each engine use too.
Nothing is deployed here: reaching each host (h2 as a user that becomes root by sudo), refusing
one whose key is not on record or whose sudo wants a password, and a deploy stopped before any
host is touched when one host does not answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.controller import audit_log
from shipyard.controller.hosts import HostView
from shipyard.controller.ssh import unreachable
from shipyard.inventory import load_environment
from tests import testhosts

REPO = Path(__file__).resolve().parents[2]


def shipyard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def hosts():
    with testhosts.multi_hosts() as made:
        yield made


@pytest.fixture(scope="module")
def settings(hosts):
    made = load_environment(REPO, "multi", {})
    assert sorted(h.address for h in made.hosts) == sorted(hosts)
    return made


def test_status_and_plan_reach_every_host_and_its_own_engine(hosts, settings):
    for host in settings.hosts:
        hosts[host.address].ssh("docker", "network", "create", f"marker-{host.name}")
    for host in settings.hosts:
        # Through the tunnel to that host's engine: what that engine has, only it has.
        names = [n.name for n in HostView(settings, host).docker.networks.list() if n.name.startswith("marker-")]
        assert names == [f"marker-{host.name}"], (host.name, names)
    status = shipyard("status", "--env", "multi")
    assert status.returncode == 0, status.stdout + status.stderr
    for host in settings.hosts:
        assert f"host {host.name} ({host.address})" in status.stdout
    assert "not deployed" in status.stdout
    plan = shipyard("plan", "--env", "multi")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "new service" in plan.stdout


def test_a_host_whose_key_is_not_on_record_is_refused(hosts, settings):
    """The known hosts file names each host's own key: h2 answering with another key is refused,
    as a host taken over or a wrong address would be."""
    known = testhosts.ACCESS_DIR / "known_hosts"
    original = known.read_text()
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in original.splitlines()}
    h1, h2 = (h.address for h in settings.hosts[:2])
    known.write_text(f"{h1} {lines[h1]}\n{h2} {lines[h1]}\n")  # h2's entry holds h1's key
    try:
        problems = unreachable(settings.hosts[:2])
    finally:
        known.write_text(original)
    assert [p.where for p in problems] == [f"host h2 ({testhosts.DEPLOY_USER}@{h2})"], problems
    assert "Host key verification failed" in problems[0].what, problems[0].what
    assert unreachable(settings.hosts) == []


def test_a_user_whose_sudo_wants_a_password_is_refused_before_any_host_is_touched(hosts, settings):
    """h2's user (multi reaches it through sudo) loses its passwordless sudo: the check every
    deploy makes first says so for h2, instead of a deploy waiting on a prompt half way."""
    rule = testhosts.SUDOERS.read_text()
    testhosts.SUDOERS.write_text(rule.replace("NOPASSWD: ", ""))
    try:
        problems = unreachable(settings.hosts)
    finally:
        testhosts.SUDOERS.write_text(rule)
    assert [p.where for p in problems] == [f"host h2 ({testhosts.DEPLOY_USER}@10.231.250.12)"], problems
    assert "a password is required" in problems[0].what, problems[0].what
    assert unreachable(settings.hosts) == []


def test_an_unreachable_host_stops_the_deploy_before_any_host_is_touched(hosts, settings):
    h2 = next(h for h in settings.hosts if h.name == "h2")
    hosts[h2.address].stop_sshd()
    try:
        refused = shipyard("up", "--env", "multi")
    finally:
        hosts[h2.address].start_sshd()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"host h2 ({testhosts.DEPLOY_USER}@{h2.address}): not reachable over SSH" in refused.stderr, refused.stderr
    assert "Connection refused" in refused.stderr
    assert "changed nothing on any host" in refused.stderr
    for host in settings.hosts:
        test_host = hosts[host.address]
        # No project, no lock, no container, no image: only the audit trail's line (below).
        left = test_host.ssh("ls", "-A", "/opt/shipyard", check=False).stdout.split()  # absent on h2
        assert left in ([], [".multi.audit.log"]), (host.name, left)
        assert test_host.ssh("docker", "ps", "-aq").stdout.split() == []
        assert test_host.ssh("docker", "images", "-q").stdout.split() == []
    events, problems = audit_log.read(settings)
    assert [p.split(":")[0] for p in problems] == ["host h2"], problems  # it could not be written there
    assert [(e.command, e.result) for e in events] == [("up", "failed")], events
    assert "h2" in events[0].error
