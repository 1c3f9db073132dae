"""What a secret rotation delivers and runs (shipyard.apply.rollout + shipyard.apply.rotation):
only the readers of a changed secret are recreated, servers take it live, the old value is
beside the new one only while a rotation is pending."""

import pytest

from shipyard import topology
from shipyard.apply.rollout import live_rotations, secret_files
from shipyard.render.compose import secrets_env
from shipyard.components.edge import certificates
from shipyard.components.registry import certificates as registry_certificates
from shipyard.secretstore import fingerprints
from shipyard.render import secret_variables
from shipyard.inventory import load_environment
from shipyard.secretstore import SECRET_NAMES, Secret


# ci on the age backend: every service's secrets are files (test_served_secrets_* for Vault's).
AGE = {"SHIPYARD_SECRETS__BACKEND": "age"}


@pytest.fixture(scope="module")
def on_host(repo):
    settings = load_environment(repo, "ci", AGE)
    return topology.build(settings).instances_on(settings.hosts[0])


@pytest.fixture(scope="module")
def variables(repo):
    settings = load_environment(repo, "ci", AGE)
    return secret_variables(settings, settings.hosts[0])


def values(suffix: str = "", **changed: str) -> dict[str, Secret]:
    out = {name: Secret(name, f"{name}-value-{suffix}".ljust(43, "x")) for name in SECRET_NAMES}
    # The edge's and the registry's TLS bundles are PEM (their files are blocks of them): made-up bodies.
    for bundle in (certificates.TLS, registry_certificates.TLS):
        out[bundle] = Secret(bundle, "".join(f"-----BEGIN {kind}-----\n{bundle}-{kind[0]}-{suffix}\n-----END {kind}-----\n"
                                             for kind in ("PRIVATE KEY", "CERTIFICATE")))
    out.update({name: Secret(name, value) for name, value in changed.items()})
    return out


def digests(on_host, vals) -> dict[str, str]:
    return dict(line.split("=", 1) for line in secrets_env(on_host, fingerprints(vals)).decode().splitlines())


def test_each_service_gets_only_its_secrets_as_files(on_host, variables):
    targets: dict[str, list[str]] = {}
    for wanted in secret_files("/p", on_host, values(), variables=variables):
        parts = wanted.path.split("/")
        if wanted.content is not None and len(parts) == 5:  # /p/secrets/<instance>/<file>
            targets.setdefault(parts[3], []).append(parts[4])
    targets = {k: sorted(v) for k, v in targets.items()}
    # Any PostgreSQL node may lead: they all hold the same files (Patroni's fragments, the raw
    # passwords rotate.sh sets, the passfiles).
    assert targets["postgres"] == targets["postgres-replica-1"] == [
        "patroni-etcd.yml", "patroni-replication.yml", "patroni-restapi.yml", "patroni-rewind.yml",
        "patroni-superuser.yml", "postgres_password", "replication_password", "replication_pgpass", "superuser_pgpass"]
    assert targets["redis"] == ["redis_auth.conf", "redis_exporter_acl.conf", "sentinel_password"]
    assert targets["redis-sentinel-1"] == ["redis_exporter_password", "redis_password", "sentinel_password"]
    # The exporters: their own role's password, their own ACL user's (a JSON map by server).
    assert targets["postgres-exporter"] == targets["postgres-replica-exporter-1"] == ["pg_exporter_password"]
    assert targets["postgres-setup"] == ["pg_exporter_password", "postgres_password"]
    assert targets["redis-sentinel-exporter-1"] == targets["redis-exporter"] == ["redis_exporter_passwords.json"]
    # Each its own Consul token (read of its own prefix), never the management token.
    assert targets["worker-blue"] == targets["worker-green"] == ["consul_token", "postgres_password", "redis_password", "sentinel_password"]
    assert targets["api-blue"] == targets["api-green"] == ["consul_token", "jwt_signing_key", "postgres_password", "redis_password",
                              "sentinel_password"]
    assert targets["consul-setup"] == ["consul_admin_token", "consul_token_api", "consul_token_worker"]
    # Only the db-setup job gets the superuser's password (as postgres_admin_password); the API,
    # workers and migrations read their own role's as postgres_password (checked by make verify).
    assert targets["db-setup"] == ["app_password", "issuer_password", "migrator_password", "postgres_admin_password"]
    # The edge: its TLS key and chain (edge.tls), nothing else; the router none.
    assert targets["edge"] == ["edge.crt", "edge.key"]
    assert "router" not in targets
    # The Consul servers: the gossip key and the ACL tokens as agent config files, the token alone.
    assert targets["consul-1"] == ["acl-tokens.json", "agent-token.json", "gossip.json", "management_token"]
    # The job making the servers' agent token: the management token and the agent token, raw.
    assert targets["consul-agent-token"] == ["agent_token", "management_token", "metrics_token"]
    # Prometheus: the token it scrapes Consul's servers with (agent:read), nothing else.
    assert targets["prometheus"] == ["consul_metrics_token"]


@pytest.mark.parametrize("secret, recreated", [
    # Redis nodes and Sentinels take the new Redis password live; its clients are recreated.
    ("redis_password", {"api-blue", "api-green", "worker-blue", "worker-green"}),
    # The nodes change the superuser's password live; only the job that logs in with it reruns.
    ("postgres_password", {"db-setup", "postgres-setup"}),  # the jobs that log in as the superuser
    ("pg_app_password", {"db-setup", "api-blue", "api-green", "worker-blue", "worker-green"}),
    ("pg_migrator_password", {"db-setup", "migrate"}),
    # Vault's issuer role: db-setup sets it; Vault's connection takes it after the rollout.
    ("pg_issuer_password", {"db-setup"}),
    ("replication_password", set()),
    # The Sentinels' own password: they and their clients restart with it (nodes read it at start).
    ("sentinel_password", {"redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3", "api-blue", "api-green", "worker-blue", "worker-green"}),
    ("jwt_signing_key", {"api-blue", "api-green"}),
    # The exporters' passwords: the Redis nodes take theirs live, the Sentinels write it at start;
    # PostgreSQL's role gets its new one from the setup job's rerun, which the exporters wait for.
    ("redis_exporter_password", {"redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3", "redis-exporter",
                                 "redis-replica-exporter-1", "redis-sentinel-exporter-1", "redis-sentinel-exporter-2",
                                 "redis-sentinel-exporter-3"}),
    ("pg_exporter_password", {"postgres-setup", "postgres-exporter", "postgres-replica-exporter-1"}),
])
def test_a_changed_secret_changes_the_label_of_exactly_the_containers_that_read_it_at_start(on_host, secret, recreated):
    before = digests(on_host, values())
    after = digests(on_host, values(**{secret: "n" * 43}))
    changed = {name.removeprefix("SHIPYARD_SECRETS_").lower().replace("_", "-")
               for name in before if before[name] != after[name]}
    assert changed == recreated
    assert "n" * 43 not in secrets_env(on_host, fingerprints(values(**{secret: "n" * 43}))).decode()


def test_the_old_value_is_delivered_only_to_live_servers_and_only_while_a_rotation_is_pending(on_host, variables):
    def retiring(previous):
        return sorted(w.path for w in secret_files("/p", on_host, values(), previous, variables)
                      if w.path.endswith(".retiring"))

    assert retiring({}) == []
    assert retiring({"redis_password": Secret("redis_password", "o" * 43)}) == [
        "/p/secrets/redis-replica-1/redis_auth.conf.retiring", "/p/secrets/redis-sentinel-1/redis_password.retiring",
        "/p/secrets/redis-sentinel-2/redis_password.retiring", "/p/secrets/redis-sentinel-3/redis_password.retiring",
        "/p/secrets/redis/redis_auth.conf.retiring"]
    old = [w for w in secret_files("/p", on_host, values(), {"redis_password": Secret("redis_password", "o" * 43)},
                                   variables)
           if w.path == "/p/secrets/redis/redis_auth.conf.retiring"][0]
    assert old.content == b"requirepass " + b"o" * 43 + b"\nmasterauth " + b"o" * 43 + b"\n"
    assert old.mode == "400" and old.uid == 999


def test_live_rotation_commands_run_in_the_servers_that_declare_them(on_host):
    apply, retire = live_rotations(on_host, {"redis_password"})
    assert sorted(s.service for s in apply) == ["redis", "redis-replica-1", "redis-sentinel-1", "redis-sentinel-2",
                                                "redis-sentinel-3"]
    assert sorted(s.service for s in retire) == ["redis", "redis-replica-1"]
    apply, retire = live_rotations(on_host, {"postgres_password"})
    # On each node: the role's new password (rotate.sh acts on the leader only), then Patroni
    # re-reads its superuser fragment (SIGHUP).
    assert sorted((s.service, s.argv[1]) for s in apply) == [
        ("postgres", "-c"), ("postgres", "/etc/postgresql/shipyard/rotate.sh"),
        ("postgres-replica-1", "-c"), ("postgres-replica-1", "/etc/postgresql/shipyard/rotate.sh")] and retire == []
    assert live_rotations(on_host, set()) == ([], [])


def test_served_secrets_reach_the_api_and_workers_through_vault_not_as_files_nor_by_recreation(repo):
    """ci's backend is Vault: it serves the API and workers everything they read, so they get no
    file, and no rotation of those secrets recreates them (their keepers take the new copies)."""
    settings = load_environment(repo, "ci", {})
    on_host = topology.build(settings).instances_on(settings.hosts[0])
    delivered = {w.path.split("/")[3] for w in secret_files("/p", on_host, values(),
                                                            variables=secret_variables(settings, settings.hosts[0]))
                 if w.content is not None and len(w.path.split("/")) == 5}
    assert not delivered & {"api-blue", "api-green", "worker-blue", "worker-green"}
    assert "redis" in delivered and "consul-setup" in delivered
    for secret in ("redis_password", "jwt_signing_key", "consul_token_api", "pg_app_password"):
        before, after = digests(on_host, values()), digests(on_host, values(**{secret: "n" * 43}))
        changed = {name for name in before if before[name] != after[name]}
        assert not {n for n in changed if "API" in n or "WORKER" in n}, (secret, changed)
