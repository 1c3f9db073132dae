import re

import yaml

from shipyard.cli import main as cli_main
from shipyard.inventory import load_environment
from shipyard.render import render_environment


def rendered(repo, env):
    return render_environment(load_environment(repo, env, {}))


def test_rendering_is_deterministic(repo):
    first, second = rendered(repo, "production"), rendered(repo, "production")
    assert {h: r.files for h, r in first.items()} == {h: r.files for h, r in second.items()}


def test_committed_compose_is_not_stale(repo):
    # Fails when templates, settings or inventories changed without `make render`.
    assert cli_main(["render", "--check"]) == 0


def test_no_secret_values_in_compose_only_file_references(repo):
    for env in ("local", "ci", "production"):
        for host in rendered(repo, env).values():
            doc = host.compose
            for name, service in doc["services"].items():
                for key in service.get("environment", {}):
                    assert not re.search(r"PASSWORD$|SECRET$|KEY$|TOKEN$", key), (env, name, key)
            for secret in doc.get("secrets", {}).values():
                assert secret["file"].startswith("./secrets/")


def test_single_host_data_ports_bind_loopback_only(repo):
    doc = rendered(repo, "ci")["ci"].compose
    assert doc["services"]["postgres"]["ports"] == ["127.0.0.1:15432:5432"]
    assert doc["services"]["redis"]["ports"] == ["127.0.0.1:16379:6379"]
    assert doc["services"]["api-blue"]["environment"]["TASKS_PG_HOSTS"] == "postgres:5432,postgres-replica-1:5432"


def test_multi_host_addresses_come_from_the_inventory(repo):
    hosts = rendered(repo, "production")
    data = hosts["data-1"].compose["services"]
    assert data["postgres"]["ports"] == ["10.0.2.21:5432:5432"]  # private address, never 0.0.0.0
    api = hosts["app-1"].compose["services"]["api-blue"]
    assert api["environment"]["TASKS_PG_HOSTS"].startswith("10.0.2.21:5432,10.0.2.21:")
    # The etcd member on its own host, healthy first (Patroni's DCS); none across hosts.
    assert data["postgres"]["depends_on"] == {"etcd-3": {"condition": "service_healthy"}}
    nginx = hosts["edge-1"].files["nginx/router.conf"].decode()
    assert "server 10.0.1.11:8000" in nginx and "server 10.0.1.12:8000" in nginx
    # HTTP and HTTPS (edge.tls: production's edge serves TLS), both on ports.edge_bind.
    assert hosts["edge-1"].compose["services"]["edge"]["ports"] == ["0.0.0.0:80:80", "0.0.0.0:443:443"]


def test_each_service_mounts_its_own_secrets_folder_and_a_label_of_what_it_reads_at_start(repo):
    services = rendered(repo, "ci")["ci"].compose["services"]
    for name, svc in services.items():
        mounts = [v for v in svc.get("volumes", []) if v.endswith(":/run/secrets:ro")]
        assert mounts == ([f"./secrets/{name}:/run/secrets:ro"] if name not in ("router",
                                                                                   "alertmanager", "edge-exporter",
                                                                                   "router-exporter", "node-exporter",
                                                                                   # the log store's stand-in has no users
                                                                                   "elasticsearch-1", "logs-setup", "logship",
                                                                                   # etcd's root password stays on the deploying machine
                                                                                   "etcd-1",
                                                                                   # ci's secrets backend is Vault: it serves them all
                                                                                   "api-blue", "api-green", "worker-blue", "worker-green")
                          else []), name
    # Patroni reads its secret fragments at start (the rewind role's too): PostgreSQL's nodes
    # carry the label. Not the API and workers under Vault: they keep their copies current themselves.
    assert services["postgres"]["labels"]["org.shipyard.secrets"] == "${SHIPYARD_SECRETS_POSTGRES:-none}"
    assert "org.shipyard.secrets" not in services["api-blue"]["labels"]
    local = rendered(repo, "local")["local"].compose["services"]
    assert local["api-blue"]["labels"]["org.shipyard.secrets"] == "${SHIPYARD_SECRETS_API_BLUE:-none}"
    assert services["redis-sentinel-2"]["labels"]["org.shipyard.secrets"] == "${SHIPYARD_SECRETS_REDIS_SENTINEL_2:-none}"


def test_config_change_changes_the_config_hash_label_but_hot_reload_does_not(repo, tmp_path):
    base = rendered(repo, "ci")["ci"].compose["services"]
    inv = (repo / "inventories" / "ci.py").read_text()
    # pgbackrest.conf is read by each node's pgBackRest as it runs: a new retention is a new file.
    # (PostgreSQL's parameters are the cluster's dynamic configuration: tests/unit/test_patroni_decide.py.)
    tweaked = load_environment(repo, "ci", {"SHIPYARD_POSTGRES__BACKUP_KEEP": "5",
                                            "SHIPYARD_RUNTIME__RATE_LIMIT_PER_MINUTE": "7"})
    after = render_environment(tweaked)["ci"].compose["services"]
    assert after["postgres"]["labels"] != base["postgres"]["labels"]
    assert after["api-blue"] == base["api-blue"]  # runtime config is hot-reloaded, the container stays
    assert inv  # the inventory on disk was not touched


def test_compose_yaml_is_valid_and_has_no_anchors(repo):
    text = rendered(repo, "local")["local"].files["compose.yaml"].decode()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text)["name"] == "shipyard-local"


def test_replicas_follow_the_setting_and_the_app_knows_every_node(repo):
    from shipyard.inventory import load_environment
    from shipyard.render import render_host

    def rendered_with(replicas):
        settings = load_environment(repo, "ci", {"SHIPYARD_POSTGRES__REPLICAS": str(replicas)})
        return render_host(settings, settings.hosts[0])

    none = rendered_with(0).compose["services"]
    assert not [s for s in none if s.startswith("postgres-replica")]
    assert none["api-blue"]["environment"]["TASKS_PG_HOSTS"] == "postgres:5432"
    two = rendered_with(2)
    services = two.compose["services"]
    assert services["api-blue"]["environment"]["TASKS_PG_HOSTS"] == \
        "postgres:5432,postgres-replica-1:5432,postgres-replica-2:5432"
    # Every node starts the same way, named; Patroni decides which one leads.
    for node in ("postgres", "postgres-replica-1", "postgres-replica-2"):
        assert services[node]["command"] == ["bash", "/etc/postgresql/shipyard/patroni-node.sh"]
        assert services[node]["healthcheck"]["test"][-2:] == ["python3", "/etc/postgresql/shipyard/patroni-health.py"]
        assert services[node]["environment"]["PG_NODE"] == services[node]["environment"]["PATRONI_NAME"] == node
        # The node list reaches the static scripts through the environment (monitor-setup.sh reads it).
        assert services[node]["environment"]["PG_NODES"] == "postgres postgres-replica-1 postgres-replica-2"
    assert "postgres/patroni-node.sh" in two.static and "postgres/patroni-node.sh" not in two.files
    assert services["postgres-replica-2"]["volumes"][0].startswith("pgdata-replica-2:")
    assert "ports" not in services["postgres-replica-1"]  # single host: reached on the compose network only
    # A replica only waits for `postgres` to start: after a failover `postgres` is a replica
    # itself, healthy only once the new leader runs.
    # (And for etcd, Patroni's DCS, healthy.)
    assert services["postgres-replica-1"]["depends_on"] == {"postgres": {"condition": "service_started"},
                                                            "etcd-1": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_postgres_nodes_and_their_slots(repo):
    from shipyard.inventory import load_environment
    from shipyard.components.postgres import slot_name
    from shipyard.components.postgres.instances import node_names as postgres_nodes

    settings = load_environment(repo, "ci", {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    assert postgres_nodes(settings) == ("postgres", "postgres-replica-1", "postgres-replica-2")
    assert [slot_name(n) for n in postgres_nodes(settings)] == ["postgres", "postgres_replica_1", "postgres_replica_2"]
    assert postgres_nodes(load_environment(repo, "ci", {"SHIPYARD_POSTGRES__REPLICAS": "0"})) == ("postgres",)


def test_redis_nodes_ask_sentinel_for_the_master_and_without_sentinels_follow_the_layout(repo):
    from shipyard.inventory import load_environment
    from shipyard.render import render_host

    settings = load_environment(repo, "ci", {"SHIPYARD_REDIS__REPLICAS": "2"})
    host = render_host(settings, settings.hosts[0])
    services = host.compose["services"]
    for node in ("redis", "redis-replica-1", "redis-replica-2"):
        # No --replicaof in compose: after a failover the Sentinels name the master, not the deploy.
        assert services[node]["command"][:4] == ["sh", "/usr/local/etc/redis/node.sh", node, "6379"]
        assert "--replicaof" not in services[node]["command"]
    env = services["redis-replica-2"]["environment"]
    assert env["REDIS_SENTINELS"] == "redis-sentinel-1:26379 redis-sentinel-2:26379 redis-sentinel-3:26379"
    assert env["REDIS_NODES"] == "redis:6379 redis-replica-1:6379 redis-replica-2:6379"
    assert env["REDIS_MASTER_NAME"] == "tasks" and env["REDIS_MASTER_AS_DEPLOYED"] == "redis:6379"
    # The master starts a full sync once every replica asked, not after its 5 s wait for more.
    assert "\nrepl-diskless-sync-max-replicas 2\n" in host.files["redis/redis.conf"].decode()
    node_sh = host.static["redis/node.sh"].decode()
    assert 'for sentinel in $REDIS_SENTINELS; do' in node_sh and "{{" not in node_sh
    assert not [f for f in host.shipped if f.startswith("redis/sentinel")]
    # A cold start after a failover: `redis` waits for the Sentinels, so they must not wait for it.
    for other in ("redis-replica-1", "redis-sentinel-1"):
        assert services[other]["depends_on"]["redis"] == {"condition": "service_started"}

    # Tuning Sentinel re-creates the Sentinels (their own config dir), not the Redis nodes.
    tuned = load_environment(repo, "ci", {"SHIPYARD_REDIS__REPLICAS": "2", "SHIPYARD_REDIS__QUORUM": "3"})
    tuned_services = render_host(tuned, tuned.hosts[0]).compose["services"]
    assert tuned_services["redis"] == services["redis"]
    assert tuned_services["redis-sentinel-1"]["environment"]["REDIS_QUORUM"] == "3"
    assert tuned_services["redis-sentinel-1"]["labels"] != services["redis-sentinel-1"]["labels"]
    assert services["redis-sentinel-1"]["command"][:2] == ["sh", "/usr/local/etc/redis-sentinel/entrypoint.sh"]
    assert "sentinel monitor tasks redis 6379 2" in host.files["sentinel/sentinel.conf"].decode()

    plain = load_environment(repo, "ci", {"SHIPYARD_REDIS__SENTINELS": "0"})
    host = render_host(plain, plain.hosts[0])
    assert "sentinel/sentinel.conf" not in host.files and "REDIS_SENTINELS" not in host.compose["services"]["redis"].get(
        "environment", {})
    assert host.compose["services"]["redis-replica-1"]["command"][-3:] == ["--replicaof", "redis", "6379"]
    assert host.compose["services"]["redis"]["command"][0] == "redis-server"


def test_consul_servers_keep_fixed_addresses_and_docker_assigns_the_rest_from_the_upper_half(repo):
    doc = rendered(repo, "ci")["ci"].compose
    assert doc["networks"]["default"]["ipam"]["config"] == [{"subnet": "10.213.2.0/24", "ip_range": "10.213.2.128/25"}]
    fixed = {name: svc["networks"]["default"]["ipv4_address"] for name, svc in doc["services"].items()
             if "networks" in svc}
    assert fixed == {"consul-1": "10.213.2.10", "consul-2": "10.213.2.11", "consul-3": "10.213.2.12",
                     "vault-1": "10.213.2.13"}  # raft knows its peers by address too


def test_a_subnet_without_room_for_both_halves_is_refused(repo):
    import pytest

    from shipyard.errors import SettingsError

    with pytest.raises(SettingsError, match="use a /16 to /24"):
        load_environment(repo, "ci", {"SHIPYARD_NETWORK__SUBNET": "10.213.2.0/28"})
