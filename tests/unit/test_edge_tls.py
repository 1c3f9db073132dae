"""The edge's TLS settings and certificate (shipyard/components/edge/settings.py, certificates.py):
errors name the key path and the fix before anything is touched; the certificate of mode 'ca'
names the settings' names, chains to the edge CA and is re-issued by a deploy exactly when the
names change or it nears expiry; mode 'files' delivers the user's chain and key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from shipyard import secretstore
from shipyard import tls as shared_tls
from shipyard.components.edge import certificates
from shipyard.errors import SettingsError
from shipyard.inventory import load_environment
from shipyard.render import render_environment

ONE_HOST = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = _h\n'
NOW = dt.datetime.now(dt.timezone.utc)


def write_inventory(repo: Path, tls: str, env: str = "t") -> Path:
    (repo / "inventories").mkdir(exist_ok=True)
    (repo / "inventories" / f"{env}.py").write_text(
        f'SHIPYARD = {{"name": "{env}", "secrets": {{"generate_missing": True}}, "edge": {{"tls": {tls}}}}}' + ONE_HOST)
    return repo


def load_error(tmp_path: Path, tls: str) -> str:
    repo = write_inventory(tmp_path, tls)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    return str(err.value)


# --- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("tls, where, fix", [
    ('{"mode": "ca"}', "edge.tls.names is empty with edge.tls.mode 'ca'", "list the DNS names users reach the edge by"),
    ('{"mode": "files"}', "edge.tls.chain_file is not set with edge.tls.mode 'files'",
     "set it to the path in the checkout of your PEM chain"),
    ('{"mode": "ca", "names": ["api.example.net", "x; rm -rf /"]}', "edge.tls.names: 'x; rm -rf /' is not a DNS name",
     "list the names users reach the edge by"),
    ('{"mode": "off", "http": "redirect"}', "edge.tls.http is 'redirect' but edge.tls.mode is 'off'",
     "set a mode ('ca' or 'files') or remove http"),
    ('{"mode": "ca", "names": ["a.example"], "chain_file": "x.pem"}', "edge.tls.chain_file is set but edge.tls.mode is 'ca'",
     "set mode 'files' or remove chain_file"),
    ('{"mode": "ca", "names": ["a.example"], "hsts_max_age_s": 60}', "hsts_max_age_s", "greater than or equal to 86400"),
])
def test_invalid_tls_settings_name_the_key_path_and_the_fix(tmp_path, tls, where, fix):
    text = load_error(tmp_path, tls)
    assert "inventories/t.py: SHIPYARD.edge.tls" in text
    assert where in text and fix in text
    assert "no host was touched" in text


def test_files_mode_needs_the_chain_file_in_the_checkout_and_the_key_in_the_store(tmp_path):
    text = load_error(tmp_path, '{"mode": "files", "chain_file": "certs/fullchain.pem"}')
    assert "SHIPYARD.edge.tls.chain_file: certs/fullchain.pem is not a file of the checkout" in text
    assert "SHIPYARD.edge.tls.mode: is 'files' but secrets/t/edge_tls_key.age (the certificate's key) does not exist" in text
    assert "make secrets-put ENV=t NAME=edge_tls_key FILE=/path/to/privkey.pem" in text
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "fullchain.pem").write_text("not a certificate\n")
    assert "certs/fullchain.pem holds no PEM certificate" in load_error(tmp_path, '{"mode": "files", "chain_file": '
                                                                                  '"certs/fullchain.pem"}')


def test_the_defaults_keep_tls_off_and_redirect_once_on(tmp_path):
    settings = load_environment(write_inventory(tmp_path, '{}'), "t", {})
    assert settings.edge.tls.mode == "off" and not settings.edge.tls.redirects
    assert settings.edge.tls.hsts_max_age_s == 63072000
    settings = load_environment(write_inventory(tmp_path, '{"mode": "ca", "names": ["a.example"]}'), "t", {})
    assert settings.edge.tls.redirects and settings.ports.edge_https == 8443


# --- the certificate of mode 'ca' --------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    """A throw-away checkout and store: environment t with TLS from its edge CA for two names."""
    write_inventory(tmp_path, '{"mode": "ca", "names": ["api.example.net", "www.example.net"]}')
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    secretstore.load_or_create(tmp_path, "t", environ)
    return tmp_path, environ


def _cert(bundle: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificates.chain_of(bundle).encode())


def _renew(repo: Path, environ, now=NOW) -> list[str]:
    return certificates.renew(repo, load_environment(repo, "t", environ), now, environ)


def test_the_issued_certificate_names_the_names_and_chains_to_the_edge_ca(store):
    repo, environ = store
    bundle = secretstore.read_secret(repo, "t", certificates.TLS, environ).value
    cert = _cert(bundle)
    ca = x509.load_pem_x509_certificate(secretstore.read_held(repo, "t", certificates.CA_CERT, environ).value.encode())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["api.example.net", "www.example.net"]
    key = serialization.load_pem_private_key(certificates.key_of(bundle).encode(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    # The chain the edge serves is the server certificate; clients trust the CA itself.
    assert certificates.chain_of(bundle).count("BEGIN CERTIFICATE") == 1


def test_an_ip_address_name_is_held_as_an_ip_address_which_a_client_by_address_checks(store):
    """A client reaching the edge by address checks the certificate's IP addresses: the same text
    as a DNS name matches nothing (seen on the multi hosts: "IP address mismatch")."""
    repo, environ = store
    write_inventory(repo, '{"mode": "ca", "names": ["api.example.net", "10.0.9.2"]}')
    lines = _renew(repo, environ)
    assert len(lines) == 1 and "re-issued" in lines[0]
    sans = _cert(secretstore.read_secret(repo, "t", certificates.TLS, environ).value).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["api.example.net"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.0.9.2"]
    assert _renew(repo, environ) == [f"{certificates.TLS}: a rotation is pending; this deploy applies it"]
    # One issued before, holding the address as a DNS name, is re-issued.
    ca = shared_tls.KeyPair(secretstore.read_held(repo, "t", certificates.CA_CERT, environ).value.encode(),
                            secretstore.read_held(repo, "t", certificates.CA_KEY, environ).value.encode())
    old = shared_tls.server_cert(ca, ("api.example.net", "10.0.9.2"), ())
    reason = shared_tls.renewal_reason(old.cert_pem, ca.cert_pem, ("api.example.net",), ("10.0.9.2",), NOW, 30)
    assert reason == "its names (10.0.9.2, api.example.net) are not the names asked for (api.example.net, IP 10.0.9.2)"


def test_nothing_changes_when_nothing_changed(store):
    repo, environ = store
    path = repo / "secrets" / "t" / f"{certificates.TLS}.age"
    before = path.read_bytes()
    first = render_environment(load_environment(repo, "t", environ))["box"].files
    assert _renew(repo, environ) == []
    assert path.read_bytes() == before and not (repo / "secrets" / "t" / f"{certificates.TLS}.previous.age").exists()
    assert render_environment(load_environment(repo, "t", environ))["box"].files == first


def test_new_names_re_issue_the_certificate_as_a_rotation_the_deploy_applies(store):
    repo, environ = store
    old = secretstore.read_secret(repo, "t", certificates.TLS, environ).value
    write_inventory(repo, '{"mode": "ca", "names": ["api.example.net"]}')
    lines = _renew(repo, environ)
    assert len(lines) == 1 and "re-issued (its names (api.example.net, www.example.net) are not edge.tls.names" in lines[0]
    assert "PRIVATE KEY" not in lines[0]
    new = secretstore.read_secret(repo, "t", certificates.TLS, environ).value
    assert _cert(new).extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["api.example.net"]
    # The old one is kept until the deploy applied the new one (secretstore.rotate).
    assert secretstore.previous_values(repo, "t", environ)[certificates.TLS].value == old
    # A second deploy before that finishes the pending rotation, issuing nothing new.
    assert _renew(repo, environ) == [f"{certificates.TLS}: a rotation is pending; this deploy applies it"]


@pytest.mark.parametrize("days_left, renewed", [(20, True), (29, True), (31, False), (300, False)])
def test_a_certificate_near_expiry_is_re_issued(store, days_left, renewed):
    repo, environ = store
    settings = load_environment(repo, "t", environ)
    ca = certificates.ensure_ca(repo, settings, environ)
    short = shared_tls.server_cert(ca, settings.edge.tls.names, (), days=days_left)
    reason = certificates.renewal_reason(repo, settings, (short.key_pem + short.cert_pem).decode(), NOW, environ)
    assert (reason is not None) == renewed, reason
    if renewed:
        assert reason.startswith("it expires in") and "renewed within 30" in reason


def test_a_certificate_another_ca_signed_is_re_issued(store):
    repo, environ = store
    settings = load_environment(repo, "t", environ)
    other = shared_tls.server_cert(shared_tls.new_ca("someone else"), settings.edge.tls.names, ())
    assert certificates.renewal_reason(repo, settings, (other.key_pem + other.cert_pem).decode(), NOW,
                                       environ) == "the edge CA did not issue it"


def test_the_edge_gets_the_key_and_chain_as_root_only_files(store):
    from shipyard import topology
    from shipyard.apply.rollout import secret_files
    from shipyard.render import secret_variables

    repo, environ = store
    settings = load_environment(repo, "t", environ)
    values = secretstore.load_or_create(repo, "t", environ)
    host = settings.hosts[0]
    edge = [i for i in topology.build(settings).instances_on(host) if i.name == "edge"]
    files = {w.path.rsplit("/", 1)[1]: w for w in secret_files("/p", tuple(edge), values, None,
                                                                 secret_variables(settings, host))
             if "/secrets/edge/" in w.path}
    assert set(files) == {"edge.key", "edge.crt"}
    assert all(w.mode == "400" and w.uid == 0 for w in files.values())
    bundle = values[certificates.TLS].value
    assert files["edge.key"].content.decode() == certificates.key_of(bundle)
    assert files["edge.crt"].content.decode() == certificates.chain_of(bundle)
    # The compose file mounts the folder; no value is in it.
    compose = str(render_environment(settings)["box"].compose)
    assert "PRIVATE KEY" not in compose and "BEGIN CERTIFICATE" not in compose


# --- mode 'files' ------------------------------------------------------------------------------

def _own_chain(tmp_path: Path) -> tuple[str, str]:
    """A chain and key as an ACME client writes them (a leaf and its issuing CA)."""
    ca = shared_tls.new_ca("Example Issuing CA")
    leaf = shared_tls.server_cert(ca, ("api.example.net",), ())
    return (leaf.cert_pem + ca.cert_pem).decode(), leaf.key_pem.decode()


def test_files_mode_delivers_the_users_chain_and_key_and_a_changed_chain_is_picked_up(tmp_path):
    chain, key = _own_chain(tmp_path)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "fullchain.pem").write_text(chain)
    (tmp_path / "privkey.pem").write_text(key)
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    # The store exists (TLS still from the CA), then the user switches to their own certificate.
    write_inventory(tmp_path, '{"mode": "ca", "names": ["api.example.net"]}')
    secretstore.load_or_create(tmp_path, "t", environ)
    assert secretstore.put(tmp_path, "t", certificates.KEY, key, environ) is False
    write_inventory(tmp_path, '{"mode": "files", "chain_file": "certs/fullchain.pem"}')
    lines = _renew(tmp_path, environ)
    assert lines == [f"{certificates.TLS}: re-issued (the chain file or the key changed); this deploy delivers it "
                     f"and reloads the edge"]
    bundle = secretstore.read_secret(tmp_path, "t", certificates.TLS, environ).value
    assert certificates.key_of(bundle).strip() == key.strip()
    assert x509.load_pem_x509_certificates(certificates.chain_of(bundle).encode()) == \
        x509.load_pem_x509_certificates(chain.encode())
    secretstore.finish_rotations(tmp_path, "t", [certificates.TLS])  # as the deploy does once applied
    assert _renew(tmp_path, environ) == []
    # A renewed chain (same key, as ACME clients often keep it) is picked up by the next deploy.
    ca = shared_tls.new_ca("Example Issuing CA 2")
    private = serialization.load_pem_private_key(key.encode(), password=None)
    renewed = (x509.CertificateBuilder().subject_name(x509.Name([]))
               .issuer_name(x509.load_pem_x509_certificate(ca.cert_pem).subject).public_key(private.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=90))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.net")]), critical=False)
               .sign(serialization.load_pem_private_key(ca.key_pem, password=None), hashes.SHA256()))
    (tmp_path / "certs" / "fullchain.pem").write_text(renewed.public_bytes(serialization.Encoding.PEM).decode()
                                                       + ca.cert_pem.decode())
    assert "the chain file or the key changed" in _renew(tmp_path, environ)[0]


def test_files_mode_refuses_a_key_that_is_not_the_chain_s(tmp_path):
    from shipyard.errors import ShipyardError

    chain, _ = _own_chain(tmp_path)
    _, other_key = _own_chain(tmp_path)
    with pytest.raises(ShipyardError) as err:
        certificates.files_bundle(other_key, chain)
    assert "is not the key of the chain file's first certificate" in str(err.value)
    assert "make secrets-put" in str(err.value)


def test_secrets_put_takes_only_supplied_names_and_never_an_empty_value(tmp_path):
    from shipyard.errors import SecretsError

    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    write_inventory(tmp_path, '{}')
    secretstore.load_or_create(tmp_path, "t", environ)
    with pytest.raises(SecretsError) as err:
        secretstore.put(tmp_path, "t", "postgres_password", "x", environ)
    assert "'postgres_password' is not a secret you supply" in str(err.value) and "edge_tls_key" in str(err.value)
    with pytest.raises(SecretsError):
        secretstore.put(tmp_path, "t", certificates.KEY, "  \n", environ)
    assert secretstore.put(tmp_path, "t", certificates.KEY, "k1", environ) is False
    assert secretstore.put(tmp_path, "t", certificates.KEY, "k2", environ) is True
    assert secretstore.read_held(tmp_path, "t", certificates.KEY, environ).value == "k2"


def test_a_new_environment_can_start_in_files_mode(tmp_path):
    """No store yet: secrets-put begins it, then the settings load and secrets-init issues the
    bundle from the chain and the key."""
    chain, key = _own_chain(tmp_path)
    (tmp_path / "fullchain.pem").write_text(chain)
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    write_inventory(tmp_path, '{"mode": "files", "chain_file": "fullchain.pem"}')
    with pytest.raises(SettingsError):
        load_environment(tmp_path, "t", environ)
    assert secretstore.put(tmp_path, "t", certificates.KEY, key, environ) is False
    load_environment(tmp_path, "t", environ)
    bundle = secretstore.load_or_create(tmp_path, "t", environ)[certificates.TLS].value
    assert certificates.key_of(bundle).strip() == key.strip()


def test_turning_tls_on_re_issues_the_empty_bundle_of_off(tmp_path):
    environ = {secretstore.IDENTITY_DIR_VAR: str(tmp_path / "ids")}
    write_inventory(tmp_path, '{}')
    assert secretstore.load_or_create(tmp_path, "t", environ)[certificates.TLS].value == ""
    write_inventory(tmp_path, '{"mode": "ca", "names": ["a.example"]}')
    assert "re-issued (TLS was off when it was issued)" in _renew(tmp_path, environ)[0]
    assert "BEGIN CERTIFICATE" in secretstore.read_secret(tmp_path, "t", certificates.TLS, environ).value
