"""Consul: a leader and every server a raft voter, gossip encrypted, ACLs default deny (an
anonymous client reads and writes nothing), the management token accepted."""

import json
import time

import pytest
import requests

from shipyard.components.consul import CONF, SECRETS

TOKEN_FILE = f"{SECRETS}/management_token"


@pytest.fixture(scope="module")
def servers(target):
    """The servers on this host (one, when they are spread over hosts)."""
    if not target.runs("consul"):
        pytest.skip("no Consul on this host")
    from shipyard import topology

    return [i.name for i in topology.build(target.settings).instances_on(target.rendered.host)
            if i.component.name == "consul" and i.service.name == "consul"]


@pytest.fixture(scope="module")
def every_server(target):
    from shipyard import topology

    return topology.build(target.settings).instance_names("consul", "consul")


def _http_status(target, server: str, *curl: str) -> str:
    code, out, err = target.exec(server, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *curl])
    return out.strip() or err


def test_a_leader_and_every_server_a_raft_voter(target, servers, every_server):
    code, out, err = target.exec(servers[0], ["consul", "operator", "raft", "list-peers", f"-token-file={TOKEN_FILE}"])
    assert code == 0, out + err
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert sorted(row[0] for row in rows) == sorted(every_server)
    # Node, ID, Address, State, Voter, RaftProtocol
    assert [row[3] for row in rows].count("leader") == 1 and all(row[4] == "true" for row in rows), out
    for server in servers:  # every server sees the same leader
        code, out, _ = target.exec(server, ["curl", "-fsS", "http://127.0.0.1:8500/v1/status/leader"])
        assert code == 0 and ":8300" in out, server


def test_gossip_is_encrypted(target, servers):
    for server in servers:
        code, out, err = target.exec(server, ["consul", "info", f"-token-file={TOKEN_FILE}"])
        assert code == 0, err
        assert "encrypted = true" in out, server


def test_anonymous_clients_read_and_write_nothing(target, servers):
    base = "http://127.0.0.1:8500/v1"
    assert _http_status(target, servers[0], f"{base}/kv/shipyard/{target.settings.name}/probe") == "403"
    assert _http_status(target, servers[0], "-X", "PUT", "--data", "x",
                        f"{base}/kv/shipyard/{target.settings.name}/probe") == "403"
    assert _http_status(target, servers[0], f"{base}/acl/tokens") == "403"


def test_the_management_token_is_accepted_and_the_acl_system_bootstrapped_once(target, servers):
    code, out, err = target.exec(servers[0], ["consul", "acl", "token", "read", "-self", f"-token-file={TOKEN_FILE}",
                                             "-format=json"])
    assert code == 0, err
    assert any(p["Name"] == "global-management" for p in json.loads(out)["Policies"])
    # The bootstrap is done by the config: an API bootstrap is refused, so nobody can mint another.
    assert _http_status(target, servers[0], "-X", "PUT", "http://127.0.0.1:8500/v1/acl/bootstrap") == "403"


def test_the_config_is_the_rendered_one(target, servers):
    code, out, err = target.exec(servers[0], ["consul", "validate", f"{CONF}/server.hcl", f"{SECRETS}/gossip.json",
                                             f"{SECRETS}/acl-tokens.json"])
    assert code == 0, out + err


def _management(target, server: str, *argv: str) -> str:
    code, out, err = target.exec(server, ["consul", *argv, f"-token-file={TOKEN_FILE}", "-format=json"])
    assert code == 0, out + err
    return out


def test_the_servers_agent_token_writes_their_nodes_only_and_is_in_use(target, servers, every_server):
    tokens = [t for t in json.loads(_management(target, servers[0], "acl", "token", "list"))
              if t.get("Description") == "agent token of the Consul servers"]
    assert len(tokens) == 1 and [p["Name"] for p in tokens[0]["Policies"]] == ["shipyard-consul-agents"], tokens
    rules = json.loads(_management(target, servers[0], "acl", "policy", "read", "-name", "shipyard-consul-agents"))["Rules"]
    assert " ".join(rules.split()) == 'node_prefix "consul-" { policy = "write" }', rules
    # In use: each server's own catalog entry carries the addresses only its agent writes (its
    # anti-entropy sync, refused and retried every ~15-30 s until the token exists). Read over
    # the published HTTP port, the token in a header from here: on no command line.
    token = target.host.file(f"{target.project_dir}/secrets/{servers[0]}/{TOKEN_FILE.rsplit('/', 1)[1]}").content_string.strip()
    reached = target.reach(servers[0])
    deadline = time.monotonic() + 120
    while True:
        missing = []
        for name in every_server:
            answer = requests.get(f"http://{reached}/v1/catalog/node/{name}", headers={"X-Consul-Token": token},
                                  timeout=5)
            node = answer.json() if answer.status_code == 200 else None
            if not node or not (node.get("Node") or {}).get("TaggedAddresses"):
                missing.append(name)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"no catalog entry written by the agent of {missing}"
