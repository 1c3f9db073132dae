"""pgBackRest under Patroni as rendered, for every inventory: pgbackrest.conf, the archive
settings in patroni.yml, the repository volume in every node, no backup service of its own. That the rendered files back up and restore real
nodes across a failover: tests/patroni/test_pgbackrest.py."""

from __future__ import annotations

import configparser

import pytest
import yaml

from shipyard import topology
from shipyard.components import postgres as component
from shipyard.components.postgres import pgbackrest
from shipyard.inventory import load_environment
from shipyard.render import render_host

ENVS = ("ci", "local", "production")


def _data_host(settings):
    return settings.hosts_with_role("data")[0]


def _conf(rendered) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    text = rendered.files[f"postgres/{pgbackrest.CONFIG_NAME}"]
    parser.read_string(text.decode() if isinstance(text, bytes) else text)
    return parser


@pytest.mark.parametrize("env", ENVS)
def test_pgbackrest_conf_has_one_repository_the_retention_and_the_nodes_own_paths(repo, env):
    settings = load_environment(repo, env, {"SHIPYARD_POSTGRES__BACKUP_KEEP": "5",
                                            "SHIPYARD_POSTGRES__BACKUP_PROCESSES": "4"})
    conf = _conf(render_host(settings, _data_host(settings)))
    assert conf.sections() == ["global", f"shipyard-{env}"]
    common = conf["global"]
    assert common["repo1-path"] == pgbackrest.REPO_PATH
    assert (common["repo1-retention-full"], common["repo1-retention-full-type"]) == ("5", "count")
    assert common["process-max"] == "4"
    assert (common["compress-type"], common["start-fast"], common["archive-async"]) == ("zst", "y", "n")
    stanza = conf[f"shipyard-{env}"]
    assert stanza["pg1-path"] == component.PGDATA and stanza["pg1-socket-path"] == component.PATRONI_RUN
    assert (stanza["pg1-port"], stanza["pg1-user"]) == ("5432", settings.postgres.user)
    # A local repository needs no credentials; the superuser's password is in a passfile secret.
    assert not [k for section in conf.sections() for k in conf[section] if "pass" in k or "key" in k]


@pytest.mark.parametrize("env", ENVS)
def test_the_leader_archives_through_pgbackrest_and_replicas_restore_from_it(repo, env):
    settings = load_environment(repo, env, {})
    config = yaml.safe_load(render_host(settings, _data_host(settings)).files["postgres/patroni.yml"])
    parameters = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert parameters["archive_mode"] == "on"
    assert parameters["archive_command"] == f"pgbackrest --stanza=shipyard-{env} archive-push %p"
    assert parameters["archive_timeout"] == pgbackrest.ARCHIVE_TIMEOUT_S
    assert config["postgresql"]["recovery_conf"] == {
        "restore_command": f'pgbackrest --stanza=shipyard-{env} archive-get %f "%p"'}
    # No permanent slot: nothing streams WAL on a slot of its own.
    assert "slots" not in config["bootstrap"]["dcs"]


@pytest.mark.parametrize("env", ENVS)
def test_every_node_mounts_the_repository_and_names_the_config_and_stanza(repo, env):
    settings = load_environment(repo, env, {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    topo = topology.build(settings)
    nodes = topo.instance_names("postgres", "postgres") + topo.instance_names("postgres", "postgres-replica")
    assert len(nodes) == 3
    services = render_host(settings, _data_host(settings)).compose["services"]
    assert "postgres-backup" not in services
    for node in nodes:
        service = services[node]
        assert f"{pgbackrest.VOLUME}:{pgbackrest.REPO_PATH}" in service["volumes"], node
        environment = service["environment"]
        assert environment["PGBACKREST_CONFIG"] == f"{component.CONF}/{pgbackrest.CONFIG_NAME}"
        assert environment["PGBACKREST_STANZA"] == f"shipyard-{env}"
        assert environment["PG_SUPERUSER_PASSFILE"] == f"/run/secrets/{component.SUPERUSER_PGPASS.target}"
        assert int(environment["PG_BACKUP_INTERVAL_S"]) == settings.postgres.backup_interval_s
        assert int(environment["PG_BACKUP_FULL_INTERVAL_S"]) == settings.postgres.backup_full_interval_s
        assert not [k for k in environment if "PASSWORD" in k]
        secrets = {s.target for s in topo.find(node, _data_host(settings)).secrets}
        assert component.SUPERUSER_PGPASS.target in secrets


@pytest.mark.parametrize("env", ENVS)
def test_the_wal_archive_alert_reads_pg_stat_archiver(repo, env):
    settings = load_environment(repo, env, {})
    rules = [render_host(settings, host).files.get("prometheus/rules/datatier.yml") for host in settings.hosts]
    rules = [r.decode() if isinstance(r, bytes) else r for r in rules if r]
    assert rules, "no datatier rules rendered"
    alert = yaml.safe_load(rules[0])
    expr = next(r["expr"] for g in alert["groups"] for r in g["rules"] if r.get("alert") == "PostgresWalArchiveStalled")
    assert "pg_wal_archive_last_failed_timestamp_seconds" in expr and "slot_name=" not in expr, expr
