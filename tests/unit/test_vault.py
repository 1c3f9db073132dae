"""Vault (OpenBao) as rendered, and the access the bootstrap gives each service. On in every
inventory (``SHIPYARD_VAULT__ENABLED=false`` turns it off): one server in local and ci, three in
production (one per control host, raft ``retry_join`` to each), a TLS-only listener, the audit
device declared, the API on loopback only. That the rendered config boots a real server:
tests/vault/; that a deploy runs it: tests/e2e/test_vault.py."""

from __future__ import annotations

import re

import pytest

from shipyard import image_plan, topology
from shipyard.components.vault import API_PORT, CLUSTER_PORT, access, readers
from shipyard.errors import SettingsError
from shipyard.inventory import load_environment
from shipyard.render import render_host

ENABLED = {"SHIPYARD_VAULT__ENABLED": "true"}
# ci runs the vault backend (`make test` takes it end to end); Vault off needs the files.
AGE_BACKEND = {"SHIPYARD_SECRETS__BACKEND": "age"}
ENVS = {"local": 1, "ci": 1, "production": 3}


def _rendered(repo, env):
    settings = load_environment(repo, env, ENABLED)
    return settings, {h.name: render_host(settings, h) for h in settings.hosts_with_role("control")}


@pytest.mark.parametrize("env", sorted(ENVS))
def test_vault_is_on_in_every_inventory_and_off_leaves_nothing_of_it(repo, env):
    assert load_environment(repo, env, {}).vault.enabled is True
    settings = load_environment(repo, env, {"SHIPYARD_VAULT__ENABLED": "false", **AGE_BACKEND})
    assert not topology.build(settings).instances_of("vault")
    for host in settings.hosts:
        rendered = render_host(settings, host)
        assert not [n for n in rendered.compose["services"] if n.startswith("vault")]
        assert not [p for p in rendered.files if p.startswith("vault/")]


@pytest.mark.parametrize("env", sorted(ENVS))
def test_each_control_host_runs_its_share_of_the_servers(repo, env):
    settings, hosts = _rendered(repo, env)
    servers = [n for r in hosts.values() for n in r.compose["services"] if n.startswith("vault")]
    assert len(servers) == ENVS[env] == settings.vault.servers
    # One per host where there are several hosts.
    assert len(hosts) == 1 or all(len([n for n in r.compose["services"] if n.startswith("vault")]) == 1
                                  for r in hosts.values())


def _config(rendered) -> str:
    text = rendered.files["vault/server.hcl"]
    return text.decode() if isinstance(text, bytes) else text


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_server_config_is_raft_tls_and_audited(repo, env):
    settings, hosts = _rendered(repo, env)
    for rendered in hosts.values():
        config = _config(rendered)
        assert 'storage "raft"' in config and 'path = "/openbao/file"' in config
        assert f'address         = ":{API_PORT}"' in config and "disable_mlock" not in config
        assert 'tls_cert_file   = "/run/secrets/tls.pem"' in config and "tls_disable" not in config
        assert 'tls_key_file    = "/run/secrets/tls.pem"' in config
        assert 'audit "file" "file"' in config and 'file_path = "/openbao/logs/audit.log"' in config
        joins = re.findall(r'leader_api_addr\s+= "https://([^"]+)"', config)
        if ENVS[env] == 1:
            assert joins == []  # nothing to join
        else:
            addresses = sorted(f"{h.address}:{API_PORT}" for h in settings.hosts_with_role("control"))
            assert sorted(joins) == addresses


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_api_is_published_on_loopback_and_peer_ports_only_across_hosts(repo, env):
    settings, hosts = _rendered(repo, env)
    for name, rendered in hosts.items():
        for service, doc in rendered.compose["services"].items():
            if not service.startswith("vault"):
                continue
            host = next(h for h in settings.hosts if h.name == name)
            client = [p for p in doc["ports"] if p.endswith(f":{API_PORT}") and p.startswith("127.0.0.1:")]
            assert len(client) == 1
            others = sorted(set(doc["ports"]) - set(client))
            if ENVS[env] == 1:
                assert others == []
            else:
                assert others == [f"{host.address}:{API_PORT}:{API_PORT}", f"{host.address}:{CLUSTER_PORT}:{CLUSTER_PORT}"]
            assert not any(p.startswith("0.0.0.0") for p in doc["ports"])
            env_vars = doc["environment"]
            assert env_vars["BAO_RAFT_NODE_ID"] == service
            assert env_vars["BAO_API_ADDR"].startswith("https://")
            # The TLS files are delivered, never rendered: no key in compose/.
            assert not [p for p in rendered.files if p.endswith(".key")]


def test_the_images_by_source(repo):
    local = load_environment(repo, "ci", ENABLED)
    builds = image_plan.build_plan(repo, local, [(i.component, i.service.image)
                                                 for i in topology.build(local).instances_on(local.hosts[0])])
    assert any(b.ref == "shipyard/openbao:2.7.2" and b.context == "shipyard/components/vault/image" for b in builds)
    official = load_environment(repo, "production", ENABLED)
    app1 = next(h for h in official.hosts if h.name == "app-1")
    doc = render_host(official, app1).compose["services"]["vault-1"]
    assert doc["image"] == "registry.internal.example:5000/openbao/openbao:2.7.2"


def test_an_even_number_of_servers_is_refused(repo):
    with pytest.raises(Exception, match="odd number"):
        load_environment(repo, "local", {**ENABLED, "SHIPYARD_VAULT__SERVERS": "2"})


def test_each_service_gets_a_policy_for_its_own_paths_only(repo):
    settings = load_environment(repo, "ci", ENABLED)
    services = {s.service: s for s in access.service_access(settings)}
    assert services["api"].database_role == services["worker"].database_role == settings.app.db_app_role
    assert services["migrate"].database_role == settings.app.db_migrator_role
    assert services["db-setup"].database_role is None  # it sets the roles up as the superuser
    assert "vault" not in services  # the server itself: its TLS bundle is a file, not a KV secret
    for name, svc in services.items():
        policy = svc.policy_hcl()
        paths = re.findall(r'path "([^"]+)"', policy)
        assert all(p.startswith((f"secret/data/services/{name}/", f"secret/metadata/services/{name}/",
                                 "database/creds/")) for p in paths), policy
        assert [p for p in paths if p.startswith("database/")] == (
            [f"database/creds/{svc.database_role}"] if svc.database_role else [])
        assert "sudo" not in policy and "create" not in policy and "update" not in policy


def test_approles_and_database_roles_take_their_limits_from_the_settings(repo):
    settings = load_environment(repo, "ci", {**ENABLED, "SHIPYARD_VAULT__APPROLE__SECRET_ID_NUM_USES": "1",
                                             "SHIPYARD_VAULT__APPROLE__TOKEN_TTL_S": "120",
                                             "SHIPYARD_VAULT__DATABASE__CREDENTIAL_TTL_S": "30"})
    want = access.desired(settings, ("postgres:5432",))
    api = next(r for r in want.approles if r.service == "api")
    assert api.params()["token_policies"] == ["service-api"]
    assert api.params()["token_ttl"] == 120 and api.params()["secret_id_num_uses"] == 1
    assert [r.name for r in want.database_roles] == sorted({settings.app.db_app_role, settings.app.db_migrator_role})
    app_role = next(r for r in want.database_roles if r.name == settings.app.db_app_role)
    assert app_role.ttl_s == 30
    assert f'IN ROLE "{settings.app.db_app_role}"' in app_role.creation_statements[0]
    assert "{{password}}" in app_role.creation_statements[0] and "VALID UNTIL '{{expiration}}'" in app_role.creation_statements[0]
    assert access.database_hosts(settings) == ("postgres:5432", "postgres-replica-1:5432")


def test_the_ttl_limits_are_checked(repo):
    with pytest.raises(Exception, match="token_max_ttl_s"):
        load_environment(repo, "ci", {**ENABLED, "SHIPYARD_VAULT__APPROLE__TOKEN_TTL_S": "99999"})


def test_loading_the_registry_loads_no_vault_client(repo):
    import subprocess
    import sys
    probe = "import sys, shipyard.components, shipyard.render; print('hvac' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_server_gets_the_same_config(repo):
    """The audit device is replicated with raft: a server declaring it with other options cannot
    take over as leader (seen on a real 3-server cluster: tests/vault/test_raft_cluster.py), so
    what differs between servers comes from their environment, never from server.hcl."""
    _, hosts = _rendered(repo, "production")
    configs = {_config(r) for r in hosts.values()}
    assert len(hosts) == 3 and len(configs) == 1


@pytest.mark.parametrize("env, expected", [
    ("local", [("vault-1", "https://127.0.0.1:8200")]),
    ("ci", [("vault-1", "https://127.0.0.1:18200")]),
    ("production", [("vault-1", "https://10.0.1.11:8200"), ("vault-2", "https://10.0.1.12:8200"),
                    ("vault-3", "https://10.0.2.21:8200")]),
])
def test_vault_init_reaches_each_server_where_it_is_published(repo, env, expected):
    from shipyard.components.vault import setup, tls

    settings = load_environment(repo, env, ENABLED)
    assert setup.server_addresses(settings) == expected
    # Each server's certificate holds the name it is reached at.
    for inst in topology.build(settings).instances_of("vault", "vault"):
        names, addresses = tls.server_names(settings, inst)
        host = dict(expected)[inst.name].split("//")[1].rsplit(":", 1)[0]
        assert host in names + addresses


def test_vault_init_with_vault_off_does_nothing(repo, capsys):
    from shipyard.component import CommandContext
    from shipyard.components.vault.commands import COMMANDS

    settings = load_environment(repo, "ci", {"SHIPYARD_VAULT__ENABLED": "false", **AGE_BACKEND})
    context = CommandContext(settings, repo, {}, lock=None, secret=None)
    assert COMMANDS[0].run(context) == 0
    assert "vault.enabled is false" in capsys.readouterr().out


def test_the_servers_tls_bundle_is_issued_from_the_held_ca_for_every_server(repo, tmp_path):
    """The secret vault_tls as the store issues it (a throw-away store over the real inventories):
    key, certificate and CA certificate; the certificate signed by the held CA, naming every server
    where it is reached; the CA made once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from shipyard import secretstore
    from shipyard.components.vault import certificates

    (tmp_path / "inventories").symlink_to(repo / "inventories")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    values = secretstore.load_or_create(tmp_path, "production", environ)
    bundle = values["vault_tls"].value
    blocks = [line.removeprefix("-----BEGIN ").removesuffix("-----") for line in bundle.splitlines()
              if line.startswith("-----BEGIN")]
    assert blocks == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]
    server, ca = x509.load_pem_x509_certificates(bundle.encode())
    held_ca = secretstore.read_held(tmp_path, "production", certificates.CA_CERT, environ).value
    assert ca.public_bytes(serialization.Encoding.PEM).decode() == held_ca
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"vault-1", "vault-2", "vault-3", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.1.11", "10.0.1.12",
                                                                          "10.0.2.21"}
    key = serialization.load_pem_private_key(bundle.encode(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    # Rotated: a new key and certificate from the same CA.
    secretstore.rotate(tmp_path, "production", "vault_tls", environ)
    again = secretstore.load_or_create(tmp_path, "production", environ)["vault_tls"].value
    assert again != bundle and x509.load_pem_x509_certificates(again.encode())[1] == ca


@pytest.mark.parametrize("answer, code, line", [
    ({"initialized": True, "sealed": False, "is_self": True, "version": "2.7.2"}, 0, "unsealed, leader, OpenBao 2.7.2"),
    ({"initialized": True, "sealed": False, "is_self": False, "version": "2.7.2"}, 0, "unsealed, standby, OpenBao 2.7.2"),
    ({"initialized": True, "sealed": True, "progress": 1, "t": 3}, 2,
     "SEALED (unseal progress 1/3; the next `make up` unseals it)"),
    ({"initialized": False, "sealed": True}, 2, "not initialised (the next `make up` initialises it)"),
    (None, 1, "no answer from its API"),
])
def test_make_status_says_each_servers_seal_state_and_role(answer, code, line):
    import json
    from shipyard.components.vault.status import describe_one

    output = json.dumps(answer).encode() if answer is not None else b"Error checking seal status: connection refused"
    assert describe_one(output, code) == line


URL = "https://10.0.0.5:8200"


@pytest.mark.parametrize("seal, error, keys_held, line", [
    (None, "ConnectionError", False, f"vault-1 {URL}: unreachable (ConnectionError); the rollout starts it"),
    ({"initialized": False, "sealed": True}, None, False, f"vault-1 {URL}: not initialised; the rollout initialises it"),
    ({"initialized": True, "sealed": True, "progress": 0, "t": 3}, None, True,
     f"vault-1 {URL}: sealed (unseal progress 0/3); the rollout unseals it"),
    ({"initialized": True, "sealed": False}, None, False, f"vault-1 {URL}: unsealed"),
], ids=["unreachable", "new", "sealed-with-keys", "unsealed"])
def test_before_touching_a_host_the_deploy_says_each_servers_state(seal, error, keys_held, line):
    from shipyard.components.vault.setup import preflight_line

    assert preflight_line("vault-1", URL, seal, error, keys_held, "production") == line


def test_a_sealed_server_this_checkout_cannot_unseal_stops_the_deploy_before_any_host():
    from shipyard.components.vault.bootstrap import VaultError
    from shipyard.components.vault.setup import preflight_line

    with pytest.raises(VaultError) as stopped:
        preflight_line("vault-2", URL, {"initialized": True, "sealed": True, "progress": 1, "t": 3}, None, False,
                       "production")
    text = str(stopped.value)
    assert URL in text and "vault-2 is sealed (unseal progress 1/3)" in text
    assert "secrets/production/ holds no vault_unseal_keys.age" in text and "nothing was changed" in text
    assert "restore secrets/production/vault_unseal_keys.age from git" in text


def test_the_vault_component_checks_its_servers_before_a_deploy_touches_a_host():
    from shipyard.components import vault

    assert vault.COMPONENT.preflight is vault.preflight


VAULT_BACKEND = {"SHIPYARD_SECRETS__BACKEND": "vault"}


def test_ci_runs_the_vault_backend_and_the_other_inventories_the_files(repo):
    assert {env: load_environment(repo, env, {}).secrets.backend for env in ENVS} == \
        {"ci": "vault", "local": "age", "production": "age"}


def test_the_vault_backend_needs_vault_running_and_an_unknown_backend_is_refused(repo):
    with pytest.raises(SettingsError) as off:
        load_environment(repo, "ci", {**VAULT_BACKEND, "SHIPYARD_VAULT__ENABLED": "false"})
    assert "SHIPYARD.secrets.backend" in str(off.value) and "set vault.enabled: true" in str(off.value)
    with pytest.raises(SettingsError) as unknown:
        load_environment(repo, "ci", {"SHIPYARD_SECRETS__BACKEND": "keyring"})
    assert "environment variable SHIPYARD_SECRETS__BACKEND" in str(unknown.value)
    assert "use one of age, vault" in str(unknown.value)


@pytest.mark.parametrize("env", sorted(ENVS))
def test_with_the_vault_backend_the_api_and_workers_get_a_hand_off_directory_and_no_one_else(repo, env):
    for variables, expected in ((AGE_BACKEND, set()), (VAULT_BACKEND, {"api", "worker"})):
        settings = load_environment(repo, env, variables)
        topo = topology.build(settings)
        handed = set()
        for host in settings.hosts:
            services = render_host(settings, host).compose["services"]
            for inst in topo.instances_on(host):
                mounts = [v for v in services[inst.name].get("volumes", []) if v.endswith(":/run/vault")]
                environment = services[inst.name].get("environment") or {}
                if mounts:
                    handed.add(inst.service.name)
                    # Its own directory, outside the project (which the deploy keeps as rendered).
                    assert mounts == [f"{settings.deploy_root}/.{env}.handoff/vault/{inst.name}:/run/vault"]
                    # It logs in with its role-id (config) and what it is handed; the state Vault
                    # gives it stays in memory.
                    assert environment["TASKS_VAULT_ROLE_ID"] == f"service-{inst.service.name}"
                    assert environment["TASKS_VAULT_WRAPPED_SECRET_ID"] == "/run/vault/secret_id.wrapped"
                    assert environment["TASKS_VAULT_CA_FILE"] == "/run/vault/ca.pem"
                    assert re.fullmatch(r"https://(vault-1|10\.0\.\d+\.\d+):8200", environment["TASKS_VAULT_ADDR"])
                    assert services[inst.name]["tmpfs"] == ["/run/taskplatform-vault:uid=10001,gid=10001,mode=0700"]
                else:
                    assert not any(k.startswith("TASKS_VAULT_") for k in environment)
        assert handed == expected


def test_with_the_vault_backend_the_api_and_workers_start_a_step_after_the_vault_setup(repo):
    from shipyard import rollout_order

    for env in ("ci", "production"):
        topo = topology.build(load_environment(repo, env, VAULT_BACKEND))
        steps = rollout_order.rollout_steps(topo)
        points = rollout_order.setup_points(topo, steps)
        # etcd's and postgres's live setups too (Patroni's etcd access, its dynamic configuration)
        after = next(point for point, comps in points.items() if "vault" in [c.name for c in comps])
        started = {name for step in steps[:after + 1] for names in step.values() for name in names}
        assert "db-setup" in started and {i.name for i in topo.instances_of("vault")} <= started
        assert not {i.name for i in topo.instances if i.service.name in ("api", "worker")} & started


def test_under_the_vault_backend_the_api_and_workers_copies_are_what_they_read_and_no_file(repo):
    """Vault serves the API and workers every secret they read (SecretFile.served): a copy each,
    named as the service reads it, none of the app role's password (its users are dynamic), no
    secret file; under age the same secrets are their files."""
    on_vault = load_environment(repo, "ci", VAULT_BACKEND)
    services = {s.service: dict(s.secrets) for s in access.service_access(on_vault)}
    assert services["api"] == {"consul_token": "consul_token_api", "jwt_signing_key": "jwt_signing_key",
                               "redis_password": "redis_password", "sentinel_password": "sentinel_password"}
    assert services["worker"] == {"consul_token": "consul_token_worker", "redis_password": "redis_password",
                                  "sentinel_password": "sentinel_password"}
    # A file rendered from its value is copied raw, by its stored name.
    assert services["redis"]["redis_password"] == "redis_password"
    for inst in topology.build(on_vault).instances:
        if inst.service.name in ("api", "worker"):
            assert inst.secrets == () and inst.service.served_secrets(on_vault)
    on_age = load_environment(repo, "ci", AGE_BACKEND)
    api = next(i for i in topology.build(on_age).instances if i.service.name == "api")
    assert {s.target for s in api.secrets} == {"postgres_password", *services["api"]}
    assert api.service.served_secrets(on_age) == ()
    # The deploy's environment tells each how often to read its copies again, and where to say
    # which versions it holds.
    environment = render_host(on_vault, on_vault.hosts[0]).compose["services"]["worker-blue"]["environment"]
    assert environment["TASKS_VAULT_KV_PATH"] == "services/worker"
    assert environment["TASKS_VAULT_REPORT_FILE"] == "/run/vault/held.json"
    assert environment["TASKS_VAULT_REFRESH_FILE"] == "/run/vault/refresh"
    assert float(environment["TASKS_VAULT_KV_POLL_SECONDS"]) == on_vault.vault.kv_poll_s


@pytest.mark.parametrize("held, behind", [
    ({"redis_password": 3, "jwt_signing_key": 1}, []),
    ({"redis_password": 2, "jwt_signing_key": 1}, ["redis_password"]),
    ({"jwt_signing_key": 5}, ["redis_password"]),
])
def test_a_reader_is_behind_on_each_copy_it_holds_at_an_older_version_or_not_at_all(held, behind):
    assert readers.behind(held, {"redis_password": 3}) == behind


def test_items_asked_at_once_are_reported_in_their_order_whichever_answers_first():
    """bootstrap.at_once: the notes come out in the calls' order (a run prints the same lines
    whichever request answered first); a failure is raised once every call ended, the first in
    that order."""
    import threading

    from shipyard.components.vault.bootstrap import Report, Synced, at_once

    second_done = threading.Event()

    def slow(report):
        assert second_done.wait(10)  # answers after the second
        report.note("policy a", False)

    def quick(report):
        report.note("policy b", True, "written")
        second_done.set()

    report = Report()
    at_once([slow, quick], report)
    assert (report.unchanged, report.changed) == (["policy a"], ["policy b: written"])

    synced = Synced()
    at_once([lambda r: r.written.update({("api", "redis_password"): 3})], synced)
    assert synced.written == {("api", "redis_password"): 3}

    ended = []

    def broken(which):
        def call(report):
            ended.append(which)
            raise RuntimeError(which)
        return call

    with pytest.raises(RuntimeError, match="first"):
        at_once([broken("first"), lambda r: ended.append("ok"), broken("second")], Report())
    assert sorted(ended) == ["first", "ok", "second"]
