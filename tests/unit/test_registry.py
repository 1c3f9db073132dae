"""The image registry component (shipyard/components/registry/): its settings' errors name the key
path and the fix before anything is touched; its config.yml is deterministic and holds the keys of
distribution 2.8's reference; no secret reaches compose/ or the render; its certificate chains to
the environment's registry CA and is re-issued exactly when it no longer fits; the client side (an
engine's trust files, docker login, pushed refs, who pulls what) is plain data.
tests/registry runs the rendered config under Debian's real docker-registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shipyard import image_plan, secretstore, topology
from shipyard import tls as shared_tls
from shipyard.components.registry import certificates, client
from shipyard.errors import SettingsError, ShipyardError
from shipyard.inventory import load_environment
from shipyard.render import render_environment

NOW = dt.datetime.now(dt.timezone.utc)
ONE_HOST = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = registry = _h\n'
# Three hosts: the registry on its own, an app host, a data host (the multi-host shape).
THREE_HOSTS = '''
_d = {"ssh_user": "deploy", "_sudo": True}
registry = [("r.example", {**_d, "shipyard_host": "reg", "address": "10.0.9.1"})]
edge = app = [("a.example", {**_d, "shipyard_host": "app-1", "address": "10.0.9.2"})]
data = control = observability = [("d.example", {**_d, "shipyard_host": "data-1", "address": "10.0.9.3"})]
'''
ON = '{"enabled": True, "names": ["registry.internal.example", "127.0.0.1"]}'


def write_inventory(repo: Path, registry: str = ON, hosts: str = ONE_HOST, more: str = "") -> Path:
    (repo / "inventories").mkdir(exist_ok=True)
    (repo / "inventories" / "t.py").write_text(
        f'SHIPYARD = {{"name": "t", "secrets": {{"generate_missing": True}}, "registry": {registry}{more}}}' + hosts)
    return repo


def load_error(tmp_path: Path, registry: str = ON, hosts: str = ONE_HOST, more: str = "") -> str:
    with pytest.raises(SettingsError) as err:
        load_environment(write_inventory(tmp_path, registry, hosts, more), "t", {})
    return str(err.value)


# --- settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("registry, what, fix", [
    ('{"enabled": True}', "registry.names is empty with registry.enabled", "list the name or address the hosts reach it by"),
    ('{"enabled": True, "names": ["reg; rm -rf /"]}', "registry.names: 'reg; rm -rf /' is neither a DNS name nor an IP",
     "list the names (lower case) or addresses"),
    ('{"enabled": True, "names": ["a.example", "a.example"]}', "a name is listed twice", "list each once"),
    ('{"enabled": True, "names": ["a.example"], "upload_purge_age_h": 0}', "upload_purge_age_h", "greater than or equal to 1"),
])
def test_invalid_settings_name_the_key_path_and_the_fix(tmp_path, registry, what, fix):
    text = load_error(tmp_path, registry)
    assert "inventories/t.py: SHIPYARD.registry" in text and what in text and fix in text


def test_enabled_with_no_registry_host_says_which_group_to_add(tmp_path):
    hosts = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = _h\n'
    text = load_error(tmp_path, hosts=hosts)
    assert "group 'registry': no host has the registry role (it runs registry)" in text
    assert "add a module-level list 'registry = [...]'" in text


def test_one_registry_host_only(tmp_path):
    hosts = THREE_HOSTS + 'registry = registry + app\n'
    text = load_error(tmp_path, hosts=hosts)
    assert "2 hosts (app-1, reg) but this release runs registry on a single host" in text


def test_its_host_needs_an_ip_address_to_publish_on(tmp_path):
    text = load_error(tmp_path, hosts=THREE_HOSTS.replace('"address": "10.0.9.1"', '"address": "r.example"'))
    assert "SHIPYARD.registry.enabled: the registry's host reg has the address 'r.example'" in text
    assert "set 'address' of host reg in the inventory to its private IP" in text


def test_a_port_another_service_publishes_there_is_refused(tmp_path):
    text = load_error(tmp_path, more=', "ports": {"registry": 9090, "prometheus_http": 9090}')
    assert "SHIPYARD.ports (host box, port 9090)" in text
    assert "ports.registry (registry) and ports.prometheus_http (prometheus) both publish 9090" in text
    assert "give one of them a free port: ports.registry or ports.prometheus_http" in text


def test_off_by_default_and_then_nowhere_in_the_render(tmp_path):
    settings = load_environment(write_inventory(tmp_path, "{}"), "t", {})
    assert not settings.registry.enabled and settings.ports.registry == 5000
    assert image_plan.delivery(settings) is None
    files = render_environment(settings)["box"].files
    assert not [path for path in files if path.startswith("registry/")] and "registry" not in files["compose.yaml"].decode()


# --- render ----------------------------------------------------------------------------------

def _rendered(repo: Path, host: str = "box", environ: dict | None = None):
    return render_environment(load_environment(repo, "t", environ or {}))[host]


def test_the_config_is_deterministic_and_holds_distribution_s_keys(tmp_path):
    write_inventory(tmp_path, '{"enabled": True, "names": ["127.0.0.1"], "allow_delete": True}')
    first, second = _rendered(tmp_path), _rendered(tmp_path)
    assert first.files == second.files
    config = yaml.safe_load(first.files["registry/config.yml"])
    assert config["version"] == 0.1
    assert config["log"] == {"level": "info", "formatter": "json", "accesslog": {"disabled": True},
                             "fields": {"service": "registry", "environment": "t"}}
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    assert config["storage"]["delete"] == {"enabled": True}
    assert config["http"]["addr"] == ":5000" and config["http"]["debug"] == {"addr": "localhost:5001"}
    assert config["http"]["tls"] == {"certificate": "/run/secrets/registry.crt", "key": "/run/secrets/registry.key",
                                     "minimumtls": "tls1.2"}
    assert "secret" not in config["http"]  # start.sh hands it over from its file
    assert config["auth"] == {"htpasswd": {"realm": "shipyard-t", "path": "/run/secrets/htpasswd"}}
    assert config["health"]["storagedriver"]["enabled"] is True
    assert first.static["registry/start.sh"].startswith(b"#!/bin/sh")


def test_the_compose_service_runs_it_unprivileged_on_its_host_s_address(tmp_path):
    write_inventory(tmp_path, hosts=THREE_HOSTS)
    service = _rendered(tmp_path, "reg").compose["services"]["registry"]
    assert service["ports"] == ["10.0.9.1:5000:5000"]
    assert service["user"] == "65534:65534" and service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "environment" not in service
    assert service["entrypoint"] == ["sh", "/etc/docker/registry/start.sh"]
    assert "./secrets/registry:/run/secrets:ro" in service["volumes"]
    assert "registry" not in _rendered(tmp_path, "app-1").compose["services"]
    # registry:2's data directory is root's: root, with every capability dropped but reading its files.
    write_inventory(tmp_path, hosts=THREE_HOSTS, more=', "images": {"source": "official"}')
    official = _rendered(tmp_path, "reg").compose["services"]["registry"]
    assert official["image"] == "registry:2.8.3"
    assert official["user"] == "0:0" and official["cap_add"] == ["DAC_READ_SEARCH"]


# --- secrets -----------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    write_inventory(tmp_path)
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    secretstore.load_or_create(tmp_path, "t", environ)
    return tmp_path, environ


def _cert(bundle: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificates.cert_of(bundle).encode())


def test_the_certificate_names_the_names_and_chains_to_the_registry_ca(store):
    repo, environ = store
    bundle = secretstore.read_secret(repo, "t", certificates.TLS, environ).value
    ca_pem = secretstore.read_held(repo, "t", certificates.CA_CERT, environ).value.encode()
    # Signed by the registry CA, for the DNS name and the IP address of registry.names, not expiring.
    assert shared_tls.renewal_reason(certificates.cert_of(bundle).encode(), ca_pem, ("registry.internal.example",),
                                     ("127.0.0.1",), NOW, 300) is None
    key = serialization.load_pem_private_key(certificates.key_of(bundle).encode(), password=None)
    assert key.public_key().public_numbers() == _cert(bundle).public_key().public_numbers()


def test_while_off_nothing_is_issued_and_no_ca_is_made(tmp_path):
    write_inventory(tmp_path, "{}")
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    values = secretstore.load_or_create(tmp_path, "t", environ)
    assert values[certificates.TLS].value == ""
    assert secretstore.read_held(tmp_path, "t", certificates.CA_CERT, environ) is None
    # Turned on: the next deploy's preflight issues it, as a rotation that deploy applies.
    write_inventory(tmp_path)
    lines = certificates.renew(tmp_path, load_environment(tmp_path, "t", environ), NOW, environ)
    assert lines == [f"{certificates.TLS}: re-issued (the registry was off when it was issued); "
                     f"this deploy delivers it and recreates the registry"]
    assert _cert(secretstore.read_secret(tmp_path, "t", certificates.TLS, environ).value)


def test_renewal_when_the_names_change_or_it_nears_expiry_and_never_else(store):
    repo, environ = store
    settings = load_environment(repo, "t", environ)
    assert certificates.renew(repo, settings, NOW, environ) == []
    ca = certificates.ensure_ca(repo, settings, environ)
    short = shared_tls.server_cert(ca, ("registry.internal.example",), ("127.0.0.1",), days=10)
    assert certificates.renewal_reason(repo, settings, (short.key_pem + short.cert_pem).decode(), NOW,
                                       environ).startswith("it expires in")
    other = shared_tls.server_cert(shared_tls.new_ca("someone"), ("registry.internal.example",), ("127.0.0.1",))
    assert certificates.renewal_reason(repo, settings, (other.key_pem + other.cert_pem).decode(), NOW,
                                       environ) == "the registry CA did not issue it"
    write_inventory(repo, '{"enabled": True, "names": ["registry.internal.example"]}')
    lines = certificates.renew(repo, load_environment(repo, "t", environ), NOW, environ)
    assert lines and "its names (registry.internal.example, IP 127.0.0.1) are not registry.names" in lines[0]


def test_no_secret_is_in_the_render(store):
    repo, environ = store
    values = secretstore.load_or_create(repo, "t", environ)
    rendered = b"".join(_rendered(repo, environ=environ).files.values()).decode()
    for name in (certificates.PASSWORD, certificates.HTTP_SECRET):
        assert values[name].value not in rendered
    assert "PRIVATE KEY" not in rendered and "$2b$" not in rendered


def test_the_htpasswd_file_is_a_bcrypt_line_that_stays_the_same_for_one_password():
    line = certificates.htpasswd_file("s3cret-value")
    user, hashed = line.rstrip("\n").split(":", 1)
    assert user == certificates.USER and hashed.startswith("$2b$05$")
    assert bcrypt.checkpw(b"s3cret-value", hashed.encode()) and not bcrypt.checkpw(b"other", hashed.encode())
    assert certificates.htpasswd_file("s3cret-value") == line  # delivered files change only with the value
    assert certificates.htpasswd_file("other") != line


# --- the client side -----------------------------------------------------------------------------

def test_an_engine_trusts_the_ca_per_name_and_logs_in_with_the_password_on_stdin(tmp_path):
    settings = load_environment(write_inventory(tmp_path), "t", {})
    assert client.trust_files(settings, "CA PEM") == {
        "/etc/docker/certs.d/registry.internal.example:5000/ca.crt": b"CA PEM",
        "/etc/docker/certs.d/127.0.0.1:5000/ca.crt": b"CA PEM"}
    assert client.login_argv(settings) == ["docker", "login", "--username", "shipyard", "--password-stdin",
                                           "registry.internal.example:5000"]


def test_built_images_are_pushed_under_the_shipyard_namespace_and_pulled_back_to_their_names(tmp_path):
    settings = load_environment(write_inventory(tmp_path), "t", {})
    pushed = "registry.internal.example:5000/shipyard/postgres:15"
    assert client.pushed_ref(settings, "shipyard/postgres:15") == pushed
    assert client.pushed_ref(settings, "shipyard/logship") == "registry.internal.example:5000/shipyard/logship:latest"
    assert client.push_argvs(settings, "shipyard/postgres:15") == [["docker", "tag", "shipyard/postgres:15", pushed],
                                                                   ["docker", "push", pushed]]
    assert client.pull_argvs(settings, "shipyard/postgres:15") == [["docker", "pull", pushed],
                                                                   ["docker", "tag", pushed, "shipyard/postgres:15"]]


def test_the_image_carrying_the_shared_layers_is_pushed_alone_first_then_the_others_together():
    base, python = "sha256:base", "sha256:python"
    layers = {"shipyard/api:1": [base, python, "sha256:api"], "shipyard/worker:1": [base, python, "sha256:w"],
              "shipyard/redis:7": [base, "sha256:redis", "sha256:redis"], "shipyard/nginx:1": [base, "sha256:nginx"]}
    sizes = {"shipyard/api:1": 300, "shipyard/worker:1": 200, "shipyard/redis:7": 50, "shipyard/nginx:1": 60}
    # The worker shares base and python with the api: more than redis's base alone (its own layer
    # listed twice counts once), and it is the smaller of the two that share the most.
    assert client.push_rounds(layers, sizes) == [["shipyard/worker:1"],
                                                 ["shipyard/api:1", "shipyard/nginx:1", "shipyard/redis:7"]]
    # Only the base shared: the smallest goes first (ties: the name).
    only_base = {ref: [base, ref] for ref in ("b:1", "a:1", "c:1")}
    assert client.push_rounds(only_base, {"a:1": 5, "b:1": 5, "c:1": 9}) == [["a:1"], ["b:1", "c:1"]]
    assert client.push_rounds({"a:1": [base]}, {"a:1": 5}) == [["a:1"]]
    assert client.push_rounds({}, {}) == []


@pytest.fixture
def fake_pushes(tmp_path, monkeypatch):
    """transfer.push with its subprocesses replaced: which refs it pushed, in which order."""
    import contextlib

    from shipyard.components.registry import transfer

    pushed: list[str] = []
    failing: set[str] = set()

    def one(settings, tunnel, ref, environ):
        pushed.append(ref)
        if ref in failing:
            raise ShipyardError(f"image {ref}", "`docker push ...` failed: no space left", "free space")
        return f"pushed {ref}"

    monkeypatch.setattr(transfer, "registry_tunnel", lambda settings: contextlib.nullcontext("127.0.0.1:1"))
    monkeypatch.setattr(transfer, "_run", lambda *args, **kwargs: "")
    monkeypatch.setattr(transfer, "_layers", lambda refs, environ: ({ref: ["base", ref] for ref in refs},
                                                                    {ref: len(ref) for ref in refs}))
    monkeypatch.setattr(transfer, "_pushed", one)
    settings = load_environment(write_inventory(tmp_path), "t", {})
    return lambda refs: transfer.push(settings, refs, "pw"), pushed, failing


def test_pushes_report_in_the_order_asked_and_a_failure_lets_the_others_end_then_names_the_first(fake_pushes):
    push, pushed, failing = fake_pushes
    refs = ["z:1", "bb:1", "a:1", "cc:1"]
    assert push(refs) == ["pushed z:1", "pushed bb:1", "pushed a:1", "pushed cc:1"]
    assert pushed[0] == "a:1" and sorted(pushed) == sorted(refs)  # the smallest alone first
    pushed.clear()
    failing.update({"cc:1", "bb:1"})
    with pytest.raises(ShipyardError) as raised:
        push(refs)
    assert sorted(pushed) == sorted(refs) and "image bb:1" in str(raised.value)
    pushed.clear()
    failing.add("a:1")  # the first push failed: no other starts
    with pytest.raises(ShipyardError, match="image a:1"):
        push(refs)
    assert pushed == ["a:1"]


def _delivered(settings, host: str, version: str | None = None) -> list[str]:
    topo = topology.build(settings)
    return image_plan.delivered_refs(settings, [(i.component, i.service.image) for i in topo.instances_on(
        next(h for h in settings.hosts if h.name == host))], version)


def test_with_ssh_hosts_every_host_pulls_what_it_runs_through_the_registry(tmp_path):
    settings = load_environment(write_inventory(tmp_path, hosts=THREE_HOSTS), "t", {})
    comp, delivery = image_plan.delivery(settings)
    assert comp.name == "registry" and delivery.login_secret == "registry_password"
    assert delivery.pulled_ref(settings, "shipyard/redis:7.0") == "registry.internal.example:5000/shipyard/redis:7.0"
    on_app, on_data, on_reg = (_delivered(settings, h, "1.2.3") for h in ("app-1", "data-1", "reg"))
    assert "shipyard/taskplatform:1.2.3" in on_app and "shipyard/taskplatform:1.2.3" not in on_data
    assert "shipyard/postgres-patroni:latest" in on_data and "shipyard/postgres-patroni:latest" not in on_app
    assert all("shipyard/node-exporter:1.5" in refs for refs in (on_app, on_data, on_reg))  # every host's agent
    # Its own image never comes from itself (shipped over SSH), nor does a base only built upon.
    assert not [ref for refs in (on_app, on_data, on_reg) for ref in refs
                if ref.startswith(("shipyard/registry:", "shipyard/postgres:15", "shipyard/base:"))]
    # Under official only what Shipyard builds goes through it; upstream images are pulled as before.
    write_inventory(tmp_path, hosts=THREE_HOSTS, more=', "images": {"source": "official"}')
    official = load_environment(tmp_path, "t", {})
    assert {ref.split(":")[0] for h in ("app-1", "data-1", "reg") for ref in _delivered(official, h)} == {
        "shipyard/taskplatform", "shipyard/postgres-patroni", "shipyard/logship"}


def test_a_single_local_host_builds_its_own_images_even_with_the_registry_on(tmp_path):
    settings = load_environment(write_inventory(tmp_path), "t", {})
    assert settings.registry.enabled and image_plan.delivery(settings) is None
