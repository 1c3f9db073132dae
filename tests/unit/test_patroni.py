"""PostgreSQL under Patroni as rendered, for every inventory (Patroni is the only way it runs),
and the image the nodes run under either image source. That the rendered config runs real
nodes that fail over: tests/patroni/; that the deploy does: tests/e2e/test_patroni_failover.py."""

from __future__ import annotations

import pytest
import yaml

from shipyard import image_plan, rollout_order, topology
from shipyard.components import postgres as component
from shipyard.components.postgres import patroni, pgbackrest
from shipyard.errors import SettingsError
from shipyard.inventory import load_environment
from shipyard.render import render_host, render_secret_file
from shipyard.render.context import RenderContext

ENVS = ("ci", "local", "production")  # production: the official images source


def _context(repo, env, variables=None) -> RenderContext:
    settings = load_environment(repo, env, variables or {})
    return RenderContext(settings, settings.hosts_with_role("data")[0], component.COMPONENT)


def _rendered(ctx):
    return render_host(ctx.settings, ctx.host)


def _configs(ctx) -> dict[str, dict]:
    """node → the patroni.yml it reads (one rendered file, shared), parsed."""
    shared = yaml.safe_load(_rendered(ctx).files["postgres/patroni.yml"])
    return {node: shared for node in component.nodes(ctx)}


def _keys(doc, path=()) -> set[tuple[str, ...]]:
    if not isinstance(doc, dict):
        return set()
    return {path + (k,) for k in doc} | {p for k, v in doc.items() for p in _keys(v, path + (k,))}


def test_an_inventory_still_naming_postgres_ha_is_told_what_changed_and_the_fix(repo, tmp_path):
    """The scripts mode is gone: ``ha`` names nothing any more, in the inventory or as a variable."""
    (tmp_path / "inventories").mkdir()
    body = (repo / "inventories" / "ci.py").read_text().replace('"postgres": {', '"postgres": {"ha": "scripts", ', 1)
    assert '"ha": "scripts"' in body
    (tmp_path / "inventories" / "ci.py").write_text(body)
    with pytest.raises(SettingsError) as refused:
        load_environment(tmp_path, "ci", {})
    text = str(refused.value)
    assert "inventories/ci.py: SHIPYARD.postgres.ha: this setting was removed: Patroni is the only way" in text
    assert "fix: remove it from inventories/ci.py; nothing replaces it" in text and "allowed keys here" not in text
    with pytest.raises(SettingsError) as refused:
        load_environment(repo, "ci", {"SHIPYARD_POSTGRES__HA": "patroni"})
    text = str(refused.value)
    assert "environment variable SHIPYARD_POSTGRES__HA: this setting was removed: Patroni is the only way" in text
    assert "fix: unset SHIPYARD_POSTGRES__HA; nothing replaces it" in text


@pytest.mark.parametrize("env", ENVS)
def test_each_node_runs_patroni_named_by_its_environment_in_one_cluster(repo, env):
    ctx = _context(repo, env)
    services = _rendered(ctx).compose["services"]
    configs = _configs(ctx)
    assert len(configs) == 1 + ctx.settings.postgres.replicas
    for node, config in configs.items():
        assert config["scope"] == f"shipyard-{env}" and config["namespace"] == patroni.NAMESPACE
        # One file for every node: name and addresses are each node's environment.
        assert "name" not in config and "connect_address" not in config["restapi"]
        assert config["restapi"] == {"listen": f":{patroni.API_PORT}"}
        assert config["postgresql"]["listen"] == "*:5432" and "connect_address" not in config["postgresql"]
        service = services[node]
        assert service["command"] == ["bash", f"{component.CONF}/patroni-node.sh"]
        environment = service["environment"]
        assert "PG_NOFAILOVER" not in environment  # one data host: every node may lead
        assert environment["PATRONI_NAME"] == node
        assert environment["PATRONI_RESTAPI_CONNECT_ADDRESS"] == f"{node}:{patroni.API_PORT}"
        assert environment["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{node}:5432"
        assert not [k for k in environment if "PASSWORD" in k]
        # The REST API is never published: peers reach it on the project network only.
        assert not [p for p in service.get("ports", []) if str(p).endswith(f":{patroni.API_PORT}")]
        secrets = {s.target for s in topology.build(ctx.settings).find(node, ctx.host).secrets}
        assert {s.target for s in patroni.SECRETS} <= secrets


@pytest.mark.parametrize("env", ENVS)
def test_the_api_and_workers_are_given_every_patroni_node(repo, env):
    settings = load_environment(repo, env, {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    topo = topology.build(settings)
    nodes = set(topo.instance_names("postgres", "postgres") + topo.instance_names("postgres", "postgres-replica"))
    assert len(nodes) == 3
    for host in settings.hosts:
        for name, service in render_host(settings, host).compose["services"].items():
            hosts = service.get("environment", {}).get("TASKS_PG_HOSTS")
            if hosts:
                assert {e.rsplit(":", 1)[0] for e in hosts.split(",")} <= nodes | {h.address for h in settings.hosts}
                assert len(hosts.split(",")) == 3, f"{host.name}/{name}: {hosts}"


@pytest.mark.parametrize("env", ENVS)
def test_etcd_runs_on_the_control_hosts_and_patroni_reaches_every_member(repo, env):
    ctx = _context(repo, env)
    topo = topology.build(ctx.settings)
    members = topo.instances_of("etcd", "etcd")
    control = ctx.settings.hosts_with_role("control")
    assert len(members) == (3 if len(control) >= 3 else 1)
    assert {m.host.name for m in members} <= {h.name for h in control}
    assert len({m.host.name for m in members}) == len(members)  # one member per host
    wanted = [str(e) for e in topo.endpoints("etcd", "etcd", ctx.host)]
    for config in _configs(ctx).values():
        assert config["etcd3"] == {"hosts": wanted, "protocol": "http"}
    for member in members:
        service = render_host(ctx.settings, member.host).compose["services"][member.name]
        assert f"etcd-data-{member.number}:/var/lib/etcd" in service["volumes"]
        assert "--initial-cluster=" + ",".join(f"{m.name}=http://{e}" for m, e in zip(
            members, topo.peer_endpoints("etcd", "etcd", 2380))) in service["command"]


@pytest.mark.parametrize("env", ENVS)
def test_patronis_etcd_access_is_set_up_before_any_node_starts(repo, env):
    settings = load_environment(repo, env, {})
    topo = topology.build(settings)
    steps = rollout_order.rollout_steps(topo)
    step_of = {name: i for i, step in enumerate(steps) for names in step.values() for name in names}
    points = rollout_order.setup_points(topo, steps)
    etcd_setup = [i for i, comps in points.items() if any(c.name == "etcd" for c in comps)]
    assert len(etcd_setup) == 1
    assert all(step_of[m.name] <= etcd_setup[0] for m in topo.instances_of("etcd"))
    assert all(step_of[n] > etcd_setup[0] for n in component.nodes(_context(repo, env)))


def _needs(settings, host) -> list:
    return [(i.component, i.service.image) for i in topology.build(settings).instances_on(host)]


@pytest.mark.parametrize("env", ENVS)
def test_every_node_the_setup_job_included_runs_the_image_built_with_patroni(repo, env):
    settings = load_environment(repo, env, {})
    host = settings.hosts_with_role("data")[0]
    services = render_host(settings, host).compose["services"]
    postgres = [i for i in topology.build(settings).instances_on(host)
                if i.component.name == "postgres" and "-exporter" not in i.name]
    assert {i.name for i in postgres} == {*component.nodes(_context(repo, env)), "postgres-setup"}
    for inst in postgres:
        assert services[inst.name]["image"] == "shipyard/postgres-patroni:latest", inst.name


def test_the_official_source_builds_the_nodes_image_on_the_pinned_postgres_image_pulled_through_the_mirror(repo):
    settings = load_environment(repo, "production", {})
    assert settings.images.source == "official" and settings.images.mirror
    host = settings.hosts_with_role("data")[0]
    pinned = f"{settings.images.mirror}/library/postgres:15.10-bookworm"
    assert pinned in image_plan.images_to_pull(settings, _needs(settings, host))
    builds = {b.ref: b for b in image_plan.build_plan(repo, settings, _needs(settings, host))}
    node_image = builds["shipyard/postgres-patroni:latest"]
    assert node_image.context == "shipyard/components/postgres/patroni-image"
    assert node_image.build_args == {"BASE_IMAGE": pinned}
    # The pulled image is the base, not something Shipyard builds: no local recipe of PostgreSQL.
    assert "shipyard/postgres:15" not in builds
    # A new pin of the official image rebuilds the nodes' image (its ref is in the source hash).
    moved = load_environment(repo, "production", {"SHIPYARD_IMAGES__MIRROR": "other.example:5000"})
    rebuilt = {b.ref: b for b in image_plan.build_plan(repo, moved, _needs(moved, host))}["shipyard/postgres-patroni:latest"]
    assert rebuilt.source_hash != node_image.source_hash


def test_the_local_source_builds_patroni_on_its_own_postgresql_image(repo):
    settings = load_environment(repo, "ci", {})
    plan = image_plan.build_plan(repo, settings, _needs(settings, settings.hosts[0]))
    refs = [b.ref for b in plan]
    assert refs.index("shipyard/postgres:15") < refs.index("shipyard/postgres-patroni:latest")
    build = plan[refs.index("shipyard/postgres-patroni:latest")]
    assert build.build_args == {"BASE_IMAGE": "shipyard/postgres:15"}
    assert image_plan.images_to_pull(settings, _needs(settings, settings.hosts[0])) == []
    # PostgreSQL's own recipe no longer installs Patroni: one place adds it, for both sources.
    recipe = (repo / "shipyard/components/postgres/image/Dockerfile").read_text()
    assert "patroni" not in recipe.split("apt-get install", 1)[1].split("apt-get clean", 1)[0]


def test_the_nodes_image_recipe_adds_debians_patroni_etcd_client_and_pgbackrest_to_its_base(repo):
    context = repo / "shipyard/components/postgres/patroni-image"
    dockerfile = (context / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # FROM the base the plan passes; the default is the official pin, so a by-hand build matches.
    assert lines[:2] == ["ARG BASE_IMAGE=postgres:15.10-bookworm", "FROM ${BASE_IMAGE}"]
    install = next(line for line in lines if "apt-get install" in line)
    assert install.split("--no-install-recommends", 1)[1].split(";")[0].split() == ["patroni", "python3-etcd", "pgbackrest"]
    # Debian's builds, not the newer ones of the repository the official image lists.
    copied = next(line for line in lines if line.startswith("COPY "))
    source, target = copied.split()[1:]
    assert target.startswith("/etc/apt/preferences.d/") and target.endswith(".pref")
    pin = {k: v.strip() for k, _, v in (line.partition(":") for line in (context / source).read_text().splitlines()
                                         if line and not line.startswith("#"))}
    assert pin == {"Package": "patroni python3-etcd pgbackrest", "Pin": "release o=Debian", "Pin-Priority": "900"}
    # The image checks what the nodes rely on while it is built: the uid the volumes are owned
    # by, the repository directory, and that Patroni's etcd3 client imports.
    assert 'test "$(id -u postgres):$(id -g postgres)" = "999:999"' in dockerfile
    assert 'test "$(stat -c %u /var/lib/pgbackrest)" = 999' in dockerfile
    assert "import etcd, patroni.dcs.etcd3" in dockerfile
    # What goes into the image is the recipe alone: no file of the context is left out or extra.
    assert sorted(p.name for p in image_plan.context_files(context)) == ["Dockerfile", source]


@pytest.mark.parametrize("env", ENVS)
def test_the_cluster_settings_go_to_patronis_dynamic_configuration(repo, env):
    ctx = _context(repo, env, {"SHIPYARD_POSTGRES__PATRONI__TTL_S": "20",
                               "SHIPYARD_POSTGRES__PATRONI__LOOP_WAIT_S": "3",
                               "SHIPYARD_POSTGRES__PATRONI__RETRY_TIMEOUT_S": "5",
                               "SHIPYARD_POSTGRES__PATRONI__SYNCHRONOUS": "true",
                               "SHIPYARD_POSTGRES__PATRONI__MAXIMUM_LAG_ON_FAILOVER_MB": "4"})
    pg = ctx.settings.postgres
    for config in _configs(ctx).values():
        dcs = config["bootstrap"]["dcs"]
        assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 3, 5)
        assert dcs["synchronous_mode"] is True and dcs["maximum_lag_on_failover"] == 4 * 1024 * 1024
        assert dcs["failsafe_mode"] is True  # the default: etcd lost alone never demotes a reachable leader
        assert dcs["postgresql"]["use_pg_rewind"] is True and dcs["postgresql"]["use_slots"] is True
        parameters = dcs["postgresql"]["parameters"]
        assert parameters["max_connections"] == pg.max_connections
        assert parameters["shared_buffers"] == f"{pg.shared_buffers_mb}MB"
        assert parameters["max_slot_wal_keep_size"] == f"{pg.max_slot_wal_keep_size_mb}MB"
        assert parameters["password_encryption"] == "scram-sha-256" and parameters["wal_log_hints"] == "on"


@pytest.mark.parametrize("env", ENVS)
def test_the_node_runs_postgresql_15_on_its_data_dir_and_shipyards_pg_hba(repo, env):
    for config in _configs(_context(repo, env)).values():
        local = config["postgresql"]
        assert local["bin_dir"] == "/usr/lib/postgresql/15/bin"
        assert local["data_dir"] == component.PGDATA
        assert local["parameters"]["hba_file"] == f"{component.CONF}/pg_hba.conf"
        assert local["pgpass"] == f"{component.PATRONI_RUN}/pgpass"
        # A new replica does not wait for a spread checkpoint on the leader (minutes when it has
        # dirty pages).
        assert {"checkpoint": "fast"} in local["basebackup"]


@pytest.mark.parametrize("env", ENVS)
def test_no_password_is_in_the_rendered_config(repo, env):
    for config in _configs(_context(repo, env)).values():
        assert not [k for k in _keys(config) if k[-1] == "password"]
        assert "authentication" not in config["postgresql"] and "authentication" not in config["restapi"]


# A value that breaks naive YAML: a fragment must carry any secret byte for byte.
AWKWARD = "a: b # \"c' {d} \\e"


@pytest.mark.parametrize("env", ENVS)
def test_each_secret_fragment_carries_its_value_under_patronis_key(repo, env):
    ctx = _context(repo, env)
    variables = component.template_context(ctx)
    wanted = {"postgres_password": (("postgresql", "authentication", "superuser"), ctx.settings.postgres.user),
              "replication_password": (("postgresql", "authentication", "replication"), patroni.REPLICATION_USER),
              "pg_rewind_password": (("postgresql", "authentication", "rewind"), patroni.REWIND_USER),
              "patroni_etcd_password": (("etcd3",), patroni.ETCD_USER),
              "patroni_api_password": (("restapi", "authentication"), patroni.API_USER)}
    assert sorted(wanted) == sorted(patroni.secret_names())
    for secret in patroni.SECRETS:
        doc = yaml.safe_load(render_secret_file(component.COMPONENT, secret.template, secret.secret, AWKWARD, variables))
        path, user = wanted[secret.secret]
        for key in path:
            doc = doc[key]
        assert doc == {"username": user, "password": AWKWARD}


def test_a_leader_that_could_not_renew_in_time_is_refused_with_the_fix(repo):
    with pytest.raises(Exception, match=r"loop_wait_s \+ 2 \* retry_timeout_s = 13 exceeds ttl_s \(10\).*raise ttl_s to 13"):
        load_environment(repo, "ci", {"SHIPYARD_POSTGRES__PATRONI__LOOP_WAIT_S": "3",
                                      "SHIPYARD_POSTGRES__PATRONI__RETRY_TIMEOUT_S": "5"})


def test_etcd_access_covers_exactly_the_clusters_prefix():
    from shipyard.components.postgres import etcd_access

    key, end = etcd_access.prefix_range(patroni.key_prefix("ci"))
    assert (key, end) == ("/patroni/shipyard-ci/", "/patroni/shipyard-ci0")
    inside = [k for k in ("/patroni/shipyard-ci/leader", "/patroni/shipyard-ci/members/postgres") if key <= k < end]
    outside = [k for k in ("/patroni/shipyard-ci", "/patroni/shipyard-ci0", "/patroni/shipyard-cid/leader", "/other")
               if key <= k < end]
    assert len(inside) == 2 and outside == []


def test_nodes_across_data_hosts_announce_their_hosts_and_every_one_may_lead(repo):
    """multi: the first node (and the repository's server) on h3, the data group's first; the
    replica on h2, reached by its host's address and published ports, a failover candidate like
    the first: both reach the repository over TLS, neither mounts it."""
    settings = load_environment(repo, "multi", {})
    topo = topology.build(settings)
    h2, h3 = settings.host("h2"), settings.host("h3")
    assert topo.find("postgres").host.name == "h3" and topo.find("postgres-replica-1").host.name == "h2"
    assert component.repository_host(topo).name == "h3"
    first = render_host(settings, h3).compose["services"]["postgres"]
    replica = render_host(settings, h2).compose["services"]["postgres-replica-1"]
    assert first["environment"]["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == "10.231.250.13:5432"
    assert first["environment"]["PATRONI_RESTAPI_CONNECT_ADDRESS"] == f"10.231.250.13:{patroni.API_PORT}"
    assert replica["environment"]["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == "10.231.250.12:5433"
    assert replica["environment"]["PATRONI_RESTAPI_CONNECT_ADDRESS"] == f"10.231.250.12:{patroni.API_PORT}"
    # What the peers connect to is published on the hosts' private addresses, nowhere else: PostgreSQL,
    # Patroni's REST API and the node's pgBackRest server (the repository's side starts backups there).
    server = pgbackrest.NODE_SERVER_PORT
    assert set(first["ports"]) == {"10.231.250.13:5432:5432", f"10.231.250.13:{patroni.API_PORT}:{patroni.API_PORT}",
                                   f"10.231.250.13:{server}:{server}"}
    assert set(replica["ports"]) == {"10.231.250.12:5433:5432", f"10.231.250.12:{patroni.API_PORT}:{patroni.API_PORT}",
                                     f"10.231.250.12:{server}:{server}"}
    for node in (first, replica):
        assert "PG_NOFAILOVER" not in node["environment"] and node["environment"]["PG_BACKUP_REPOSITORY"] == "remote"
        assert not any(v.startswith("pgbackrest:") for v in node["volumes"])
    # Its exporter runs beside it; the setup job (on h3) looks for the primary among every node, as h3 reaches it.
    assert "postgres-replica-exporter-1" in render_host(settings, h2).compose["services"]
    assert render_host(settings, h3).compose["services"]["postgres-setup"]["environment"]["PG_NODES"] == (
        "postgres 10.231.250.12:5433")


def test_two_nodes_on_one_host_of_several_are_refused_naming_the_peer_port(repo):
    """Patroni's REST API keeps its number once published (it is advertised as is): a second
    node on a data host beside the first is refused before any host is touched."""
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "multi", {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    text = str(err.value)
    assert f"postgres and postgres-replica-2 would both publish the peer ports {patroni.API_PORT}/tcp" in text
    assert "list at least 3 hosts in group 'data'" in text


def test_status_shows_patronis_view_of_each_node():
    from shipyard.components.postgres.status import patroni_line

    cluster = {"members": [
        {"name": "postgres", "role": "replica", "state": "streaming", "timeline": 3, "lag": 0},
        {"name": "postgres-replica-1", "role": "leader", "state": "running", "timeline": 3},
        {"name": "postgres-replica-2", "role": "replica", "state": "running", "timeline": 2, "lag": "unknown"}]}
    assert patroni_line("postgres-replica-1", cluster) == (
        "Patroni leader, running, timeline 3, members: postgres, postgres-replica-2")
    assert patroni_line("postgres", cluster) == "Patroni replica of postgres-replica-1, streaming, timeline 3, lag 0 B"
    assert patroni_line("postgres-replica-2", cluster).endswith("timeline 2, lag unknown")
    assert "NO LEADER" in patroni_line("postgres", {"members": [cluster["members"][0]]})
    assert "not a member" in patroni_line("postgres-replica-3", cluster)
    tagged = {"members": [cluster["members"][1], {**cluster["members"][0], "tags": {"nofailover": True}}]}
    assert patroni_line("postgres", tagged).endswith("lag 0 B, joining: not a failover candidate yet (nofailover)")


def test_pg_promote_and_pg_rebuild_refuse_a_node_the_environment_lacks_before_the_lock(repo):
    """They drive Patroni's REST API (tests/patroni/test_switchover.py runs them on real nodes); a
    name the topology lacks is refused first, with the names it has."""
    from shipyard.component import CommandContext
    from shipyard.errors import ShipyardError

    settings = load_environment(repo, "ci", {})

    def no_lock():
        raise AssertionError("refused before the lock is taken")

    for command, option in (("pg-promote", "to"), ("pg-rebuild", "node")):
        run = next(c for c in component.COMPONENT.commands if c.name == command).run
        ctx = CommandContext(settings, repo, {option: "postgres-replica-7", "force": False}, no_lock, lambda name: "")
        with pytest.raises(ShipyardError, match=r"has no PostgreSQL node 'postgres-replica-7'"):
            run(ctx)
