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
    """On one host: the repository a volume every node mounts."""
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


@pytest.mark.parametrize("env", ENVS)
def test_one_host_has_no_repository_server_and_no_tls(repo, env):
    settings = load_environment(repo, env, {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    assert not pgbackrest.spans_hosts(settings)
    rendered = render_host(settings, _data_host(settings))
    assert pgbackrest.REPO_SERVICE not in rendered.compose["services"]
    assert "tls" not in " ".join(_conf(rendered)["global"])
    for node in ("postgres", "postgres-replica-1"):
        assert not {s.target for s in topology.build(settings).find(node, _data_host(settings)).secrets} & set(
            pgbackrest.TLS_FILES.values())
        assert "PG_BACKUP_REPOSITORY" not in rendered.compose["services"][node]["environment"]


def _multi(repo):
    settings = load_environment(repo, "multi", {})
    return settings, {h: render_host(settings, settings.host(h)) for h in ("h2", "h3")}


def test_across_hosts_every_node_reaches_the_repository_server_over_mutual_tls(repo):
    """multi: the repository is served from h3; each node's file names it as its host reaches it
    (by service name beside it, at h3's address from h2), with the same path, and makes the node
    a server the repository's certificate alone may use."""
    settings, rendered = _multi(repo)
    assert pgbackrest.spans_hosts(settings)
    expected = {"h3": ("pgbackrest-repo", "8432"), "h2": ("10.231.250.13", "8432")}
    files = {part: f"/run/secrets/{name}" for part, name in pgbackrest.TLS_FILES.items()}
    for host, (address, port) in expected.items():
        common = _conf(rendered[host])["global"]
        assert (common["repo1-host"], common["repo1-host-port"], common["repo1-host-type"]) == (address, port, "tls")
        assert common["repo1-path"] == pgbackrest.REPO_PATH  # sent with each request: must be the server's
        assert (common["repo1-host-cert-file"], common["repo1-host-key-file"], common["repo1-host-ca-file"]) == (
            files["cert"], files["key"], files["ca"])
        assert common["tls-server-port"] == str(pgbackrest.NODE_SERVER_PORT)
        assert common["tls-server-auth"] == f"{pgbackrest.CLIENT_CN}=shipyard-multi"
        assert _conf(rendered[host])["global:archive-get"]["io-timeout"] == str(pgbackrest.ARCHIVE_GET_IO_TIMEOUT_S)
    # The server: on h3 only, its port on h3's private address, the volume, the TLS files, no PostgreSQL secret.
    assert pgbackrest.REPO_SERVICE not in rendered["h2"].compose["services"]
    server = rendered["h3"].compose["services"][pgbackrest.REPO_SERVICE]
    assert server["ports"] == [f"10.231.250.13:{pgbackrest.REPO_PORT}:{pgbackrest.REPO_PORT}"]
    assert f"{pgbackrest.VOLUME}:{pgbackrest.REPO_PATH}" in server["volumes"]
    assert "depends_on" not in server
    secrets = {s.target for s in topology.build(settings).find(pgbackrest.REPO_SERVICE, settings.host("h3")).secrets}
    assert secrets == set(pgbackrest.TLS_FILES.values())
    for node, host in (("postgres", "h3"), ("postgres-replica-1", "h2")):
        assert set(pgbackrest.TLS_FILES.values()) <= {
            s.target for s in topology.build(settings).find(node, settings.host(host)).secrets}
    assert rendered["h3"].compose["services"]["postgres"]["depends_on"][pgbackrest.REPO_SERVICE] == {
        "condition": "service_healthy"}


def test_the_repository_server_starts_backups_on_every_node_as_it_reaches_them(repo):
    settings, rendered = _multi(repo)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(rendered["h3"].files[f"postgres/{component.REPO_CONFIG_NAME}"].decode())
    common, stanza = parser["global"], parser["shipyard-multi"]
    assert (common["tls-server-port"], common["tls-server-auth"]) == (str(pgbackrest.REPO_PORT), "pgbackrest=shipyard-multi")
    assert (common["repo1-path"], common["repo1-retention-full"]) == (pgbackrest.REPO_PATH, str(settings.postgres.backup_keep))
    assert [(stanza[f"pg{n}-host"], stanza[f"pg{n}-host-port"], stanza[f"pg{n}-host-type"]) for n in (1, 2)] == [
        ("postgres", "8433", "tls"), ("10.231.250.12", "8433", "tls")]
    assert "pg3-host" not in stanza
    assert all(stanza[f"pg{n}-path"] == component.PGDATA and stanza[f"pg{n}-user"] == settings.postgres.user
               for n in (1, 2))


def test_the_tls_bundle_names_every_server_as_dns_and_splits_into_three_files(repo, tmp_path):
    """pgBackRest 2.45 checks a server's name against the certificate's DNS names and CN only:
    the host addresses are DNS names too. The CN is the name every server authorises."""
    from cryptography import x509

    from shipyard import tls
    from shipyard.components.postgres import certificates
    from shipyard.render import render_secret_file

    settings, _ = _multi(repo)
    dns, addresses = certificates.names(settings)
    assert dns[0] == pgbackrest.CLIENT_CN
    assert {"pgbackrest-repo", "postgres", "postgres-replica-1", "10.231.250.13", "10.231.250.12"} <= set(dns)
    ca = tls.new_ca("test CA")
    issued = tls.server_cert(ca, dns, addresses)
    bundle = (issued.key_pem + issued.cert_pem + ca.cert_pem).decode()
    files = {}
    for part in pgbackrest.TLS_FILES:
        files[part] = render_secret_file(component.COMPONENT, f"secrets/pgbackrest-{part}.pem.j2", pgbackrest.TLS,
                                         bundle, {"pgbackrest_cert_of": certificates.cert_of,
                                                  "pgbackrest_key_of": certificates.key_of,
                                                  "pgbackrest_ca_of": certificates.ca_of}).decode()
    assert files["key"].count("PRIVATE KEY-----") == 2 and "CERTIFICATE" not in files["key"]
    cert = x509.load_pem_x509_certificate(files["cert"].encode())
    assert files["cert"].count("BEGIN CERTIFICATE") == 1 and files["ca"].count("BEGIN CERTIFICATE") == 1
    assert cert.subject.rfc4514_string() == f"CN={pgbackrest.CLIENT_CN}"
    assert x509.load_pem_x509_certificate(files["ca"].encode()).subject.rfc4514_string() == "CN=test CA"
    assert cert.issuer == x509.load_pem_x509_certificate(files["ca"].encode()).subject


@pytest.fixture
def multi_store(repo, tmp_path):
    """A throw-away checkout with multi's inventory and a store whose secrets are made."""
    import shutil

    from shipyard import secretstore

    (tmp_path / "inventories").mkdir()
    shutil.copy(repo / "inventories" / "multi.py", tmp_path / "inventories" / "multi.py")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    secretstore.load_or_create(tmp_path, "multi", environ)
    return tmp_path, environ


def test_a_deploy_re_issues_the_bundle_when_the_nodes_hosts_change_and_only_then(multi_store):
    import datetime as dt

    from cryptography import x509

    from shipyard import secretstore
    from shipyard.components.postgres import certificates

    repo, environ = multi_store
    now = dt.datetime.now(dt.timezone.utc)
    issued = secretstore.read_secret(repo, "multi", pgbackrest.TLS, environ).value
    assert certificates.renew(repo, load_environment(repo, "multi", environ), now, environ) == []
    inventory = repo / "inventories" / "multi.py"
    inventory.write_text(inventory.read_text().replace("10.231.250.12", "10.231.250.22"))
    lines = certificates.renew(repo, load_environment(repo, "multi", environ), now, environ)
    assert len(lines) == 1 and "pgbackrest_tls: re-issued (its names" in lines[0] and "PRIVATE KEY" not in lines[0]
    assert "are not the PostgreSQL nodes' names and hosts" in lines[0] and "10.231.250.22" in lines[0]
    renewed = secretstore.read_secret(repo, "multi", pgbackrest.TLS, environ).value
    assert renewed != issued
    sans = x509.load_pem_x509_certificate(certificates.cert_of(renewed).encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "10.231.250.22" in sans.get_values_for_type(x509.DNSName)
    assert "10.231.250.12" not in sans.get_values_for_type(x509.DNSName)
    # Pending until a deploy applies it; one host's nodes never ask for it.
    assert certificates.renew(repo, load_environment(repo, "multi", environ), now, environ) == [
        "pgbackrest_tls: a rotation is pending; this deploy applies it"]
    assert certificates.renew(repo, load_environment(repo, "multi", {**environ, "SHIPYARD_POSTGRES__REPLICAS": "0"}),
                              now, environ) == []
