"""PostgreSQL under Patroni (``postgres.ha: patroni``) as rendered, for every inventory with the
mode forced on by ``SHIPYARD_POSTGRES__HA=patroni`` (off by default: nothing deployed changes).
That the rendered config runs real nodes that fail over: tests/patroni/."""

from __future__ import annotations

import pytest
import yaml

from shipyard.components import postgres as component
from shipyard.components.postgres import patroni
from shipyard.inventory import load_environment
from shipyard.render import render_host, render_secret_file
from shipyard.render.context import RenderContext
from shipyard.render.templates import render_template

PATRONI = {"SHIPYARD_POSTGRES__HA": "patroni"}
ENVS = ("ci", "local", "production")


def _context(repo, env, variables=PATRONI) -> RenderContext:
    settings = load_environment(repo, env, variables)
    return RenderContext(settings, settings.hosts_with_role("data")[0], component.COMPONENT)


def _configs(ctx) -> dict[str, dict]:
    """node → its patroni.yml, parsed."""
    return {node: yaml.safe_load(render_template("postgres", component.COMPONENT.templates_dir, patroni.TEMPLATE,
                                                 component.patroni_config_vars(ctx, node)))
            for node in component.nodes(ctx)}


def _keys(doc, path=()) -> set[tuple[str, ...]]:
    if not isinstance(doc, dict):
        return set()
    return {path + (k,) for k in doc} | {p for k, v in doc.items() for p in _keys(v, path + (k,))}


@pytest.mark.parametrize("env", ENVS)
def test_scripts_run_postgresql_unless_patroni_is_asked_for(repo, env):
    settings = load_environment(repo, env, {})
    assert settings.postgres.ha == "scripts"
    for host in settings.hosts:
        assert not [p for p in render_host(settings, host).files if "patroni" in p]


@pytest.mark.parametrize("env", ENVS)
def test_each_node_gets_its_own_name_and_addresses_in_one_cluster(repo, env):
    ctx = _context(repo, env)
    configs = _configs(ctx)
    assert len(configs) == 1 + ctx.settings.postgres.replicas
    for node, config in configs.items():
        assert config["scope"] == f"shipyard-{env}" and config["namespace"] == patroni.NAMESPACE
        assert config["name"] == node
        assert config["restapi"] == {"listen": f"0.0.0.0:{patroni.API_PORT}", "connect_address": f"{node}:{patroni.API_PORT}"}
        assert config["postgresql"]["listen"] == "0.0.0.0:5432"
        assert config["postgresql"]["connect_address"] == f"{node}:5432"


@pytest.mark.parametrize("env", ENVS)
def test_etcd_is_reached_on_the_control_hosts(repo, env):
    ctx = _context(repo, env)
    wanted = [f"{h.address}:{patroni.ETCD_CLIENT_PORT}" for h in ctx.settings.hosts_with_role("control")]
    for config in _configs(ctx).values():
        assert config["etcd3"] == {"hosts": wanted, "protocol": "http"}


@pytest.mark.parametrize("env", ENVS)
def test_the_cluster_settings_go_to_patronis_dynamic_configuration(repo, env):
    ctx = _context(repo, env, {**PATRONI, "SHIPYARD_POSTGRES__PATRONI__TTL_S": "20",
                               "SHIPYARD_POSTGRES__PATRONI__LOOP_WAIT_S": "3",
                               "SHIPYARD_POSTGRES__PATRONI__RETRY_TIMEOUT_S": "5",
                               "SHIPYARD_POSTGRES__PATRONI__SYNCHRONOUS": "true",
                               "SHIPYARD_POSTGRES__PATRONI__MAXIMUM_LAG_ON_FAILOVER_MB": "4"})
    pg = ctx.settings.postgres
    for config in _configs(ctx).values():
        dcs = config["bootstrap"]["dcs"]
        assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 3, 5)
        assert dcs["synchronous_mode"] is True and dcs["maximum_lag_on_failover"] == 4 * 1024 * 1024
        assert dcs["postgresql"]["use_pg_rewind"] is True and dcs["postgresql"]["use_slots"] is True
        parameters = dcs["postgresql"]["parameters"]
        assert parameters["max_connections"] == pg.max_connections
        assert parameters["shared_buffers"] == f"{pg.shared_buffers_mb}MB"
        assert parameters["max_slot_wal_keep_size"] == f"{pg.max_slot_wal_keep_size_mb}MB"
        assert parameters["password_encryption"] == "scram-sha-256" and parameters["wal_log_hints"] == "on"


@pytest.mark.parametrize("env", ENVS)
def test_the_node_runs_debians_postgresql_15_on_the_scripts_data_and_pg_hba(repo, env):
    for config in _configs(_context(repo, env)).values():
        local = config["postgresql"]
        assert local["bin_dir"] == "/usr/lib/postgresql/15/bin"
        assert local["data_dir"] == component.PGDATA
        assert local["parameters"]["hba_file"] == f"{component.CONF}/pg_hba.conf"
        assert local["pgpass"] == f"{component.PATRONI_RUN}/pgpass"
        # A new replica does not wait for a spread checkpoint on the leader (minutes when it has
        # dirty pages): what the scripts mode's pg_basebackup --checkpoint=fast does.
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
        load_environment(repo, "ci", {**PATRONI, "SHIPYARD_POSTGRES__PATRONI__LOOP_WAIT_S": "3",
                                      "SHIPYARD_POSTGRES__PATRONI__RETRY_TIMEOUT_S": "5"})


def test_an_unknown_ha_mode_is_refused(repo):
    with pytest.raises(Exception, match="'scripts' or 'patroni'"):
        load_environment(repo, "ci", {"SHIPYARD_POSTGRES__HA": "pacemaker"})


def test_etcd_access_covers_exactly_the_clusters_prefix():
    from shipyard.components.postgres import etcd_access

    key, end = etcd_access.prefix_range(patroni.key_prefix("ci"))
    assert (key, end) == ("/patroni/shipyard-ci/", "/patroni/shipyard-ci0")
    inside = [k for k in ("/patroni/shipyard-ci/leader", "/patroni/shipyard-ci/members/postgres") if key <= k < end]
    outside = [k for k in ("/patroni/shipyard-ci", "/patroni/shipyard-ci0", "/patroni/shipyard-cid/leader", "/other")
               if key <= k < end]
    assert len(inside) == 2 and outside == []
