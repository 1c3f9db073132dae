"""etcd (Patroni's DCS): every member healthy in one cluster, and authentication on —
an anonymous client may read nothing."""

import pytest

from shipyard import topology


@pytest.fixture(scope="module")
def etcd_members(target):
    names = [i.name for i in topology.build(target.settings).instances_on(target.rendered.host)
             if i.component.name == "etcd"]
    if not names:
        pytest.skip("no etcd member on this host (they run on the control hosts)")
    return names


def _etcdctl(target, member: str, *args: str) -> tuple[int, str, str]:
    return target.exec(member, ["env", "ETCDCTL_API=3", "etcdctl", "--endpoints=http://127.0.0.1:2379",
                                "--command-timeout=5s", *args])


def test_every_member_is_healthy_in_one_cluster(target, etcd_members):
    """Each member as its own host sees it (another host's member may advertise a name only its
    own host resolves): it knows a leader, and the cluster it is in has every member, started."""
    expected = len(topology.build(target.settings).instances_of("etcd"))
    for member in etcd_members:
        code, out, err = _etcdctl(target, member, "endpoint", "status", "-w", "fields")
        assert code == 0, f"{member}: {err}"
        leaders = {line.split(" : ")[1] for line in out.splitlines() if line.startswith('"Leader"')}
        assert len(leaders) == 1 and "0" not in leaders, f"{member}: no leader: {out}"
        code, out, err = _etcdctl(target, member, "member", "list", "-w", "simple")
        assert code == 0, f"{member}: {err}"
        started = [line for line in out.splitlines() if ", started, " in line]
        assert len(started) == expected, f"{member}: {expected} members expected, started: {out}"


def test_an_anonymous_client_reads_nothing(target, etcd_members):
    code, out, err = _etcdctl(target, etcd_members[0], "get", "--prefix", "/")
    assert code != 0 and out.strip() == "", f"{etcd_members[0]}: an anonymous read answered: {out[:200]}"
    assert "user name is empty" in err or "permission denied" in err, err
