"""The `multi` environment: three Docker hosts reached over SSH — on this machine, the test hosts
of tests/testhosts.py (network namespaces, each with its own dockerd and sshd, joined by a
bridge: `make test-hosts`), at fixed addresses so that this file and its render stay the same.

- h1 (10.231.250.11): the edge, the task platform, the image registry;
- h2 (10.231.250.12): the task platform, Redis's master as first deployed, a PostgreSQL replica
  (streaming from h3 across hosts; it takes over when h3's node fails);
- h3 (10.231.250.13): PostgreSQL's first node and its backup repository (served to both nodes
  over TLS), a Redis replica, metrics and logs;
- all three: Consul's, etcd's and Vault's servers (a raft quorum across hosts), a Redis Sentinel
  each (a majority of them outlives any one host: losing h2 fails Redis over to h3's replica).

A group's hosts are taken in the order the group lists them: the `cache` group's first is h2
(Redis's first master), the `data` group's h3 (PostgreSQL's first node, its replicas from
the group's next host on). PostgreSQL's backup repository is a volume of h3, served by
pgBackRest's TLS server to every node (docs/data-tier.md, "Across hosts").

SSH: by the key the test hosts make for their run, each host's key checked against the known
hosts file they write (both in ``/tmp/shipyard-testhosts``, tests/testhosts.ACCESS_DIR); h1 and
h3 as root, h2 as the user ``shipyard``, root by passwordless sudo (``_sudo``: the deploy's
commands and the controller's alike, docs/deploy.md).
"""

SHIPYARD = {
    "name": "multi",
    "images": {"source": "local"},
    # Throw-away hosts: secrets generated on the deploying machine at the first deploy (git-ignored).
    "secrets": {"generate_missing": True},
    "network": {"subnet": "10.213.3.0/24"},
    # Each host has its own addresses: the usual ports, the edge on every address of its host.
    "ports": {"edge_bind": "0.0.0.0"},
    "edge": {"tls": {"mode": "ca", "names": ["10.231.250.11"]}},
    "consul": {"servers": 3},
    "vault": {"enabled": True, "servers": 3},
    # On h1 (docs/registry.md); the deploy's build once → push → pull through it is not wired yet.
    "registry": {"enabled": True, "names": ["10.231.250.11"]},
}

_ACCESS = "/tmp/shipyard-testhosts"
_ssh = {"ssh_user": "root", "ssh_key": f"{_ACCESS}/id_ed25519", "ssh_known_hosts_file": f"{_ACCESS}/known_hosts"}

_h1 = ("10.231.250.11", {**_ssh, "shipyard_host": "h1", "address": "10.231.250.11"})
_h2 = ("10.231.250.12", {**_ssh, "ssh_user": "shipyard", "_sudo": True, "shipyard_host": "h2", "address": "10.231.250.12"})
_h3 = ("10.231.250.13", {**_ssh, "shipyard_host": "h3", "address": "10.231.250.13"})

edge = [_h1]
app = [_h1, _h2]
data = [_h3, _h2]
cache = [_h2, _h3]
control = [_h1, _h2, _h3]
observability = [_h3]
registry = [_h1]
