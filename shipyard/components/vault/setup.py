"""`make vault-init ENV=..`: the environment's Vault from the deploying machine, idempotently —
its CA, initialisation, unseal of every server, bootstrap and each service's secrets.

What only this machine holds is age-encrypted under ``secrets/<env>/`` (held secrets,
shipyard.secretstore.read_held): the CA (``vault_ca_cert``, ``vault_ca_key``: certificates.py),
and, written the moment the server returns them and before anything else, the unseal keys
(``vault_unseal_keys``) and the root token (``vault_root_token``). A restarted (sealed) server
is unsealed from them by the next run. The root token serves the first run only: it makes the
deployer's AppRole (``vault_deployer``: role-id and secret-id), whose short-lived tokens every
later run bootstraps with, and is then revoked and deleted (OpenBao 2.7 has the unauthenticated
generate-root endpoints off, so a root token is made on demand only by an operator: docs/secrets.md).
Nothing of them is printed. `make up` runs this within the rollout, once its servers and db-setup
converged (Component.live_setup); `make vault-init` runs it alone.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from shipyard import secretstore, topology
from shipyard.components.vault import API_PORT, CA_FILE, LOG_IN, WRAPPED_SECRET_ID, access, bootstrap, readers
from shipyard.components.vault.certificates import CA_CERT, CA_KEY, ensure_ca
from shipyard.components.vault.bootstrap import VaultError

ISSUER_PASSWORD = "pg_issuer_password"  # the role Vault's database engine connects as (db-setup makes it)
UNSEAL_KEYS, ROOT_TOKEN, DEPLOYER = "vault_unseal_keys", "vault_root_token", "vault_deployer"
HELD = (CA_CERT, CA_KEY, UNSEAL_KEYS, ROOT_TOKEN, DEPLOYER)


def server_addresses(settings) -> list[tuple[str, str]]:
    """(instance, https address) of every Vault server as the deploying machine reaches it: on
    its host's private address where the servers span hosts (the API is a peer port there), else
    at its published loopback port (the deploy runs on that host)."""
    topo = topology.build(settings)
    out = []
    for inst in topo.instances_of("vault", "vault"):
        peer = [address for address, port, _ in topo.peer_bindings(inst) if port == API_PORT]
        bound = topo.binding(inst)
        if peer:
            out.append((inst.name, f"https://{peer[0]}:{API_PORT}"))
        elif bound is not None:
            out.append((inst.name, f"https://{'127.0.0.1' if bound[0] == '0.0.0.0' else bound[0]}:{bound[1]}"))
    if not out:
        raise VaultError(f"environment {settings.name}", "runs no Vault server with a published API",
                         "set vault.enabled (and ports.vault_https) in the inventory")
    return out


def _initialise(repo: Path, settings, client, environ) -> list[str]:
    """Initialise a new server: its unseal keys and root token stored at once (the root token
    only until the deployer's credential is stored: ``_login``)."""
    try:
        fresh = not client.sys.is_initialized()
    except requests.RequestException as err:
        raise VaultError(client.url, f"unreachable ({type(err).__name__})",
                         f"check that its server runs and publishes its API there (make status ENV={settings.name})") from err
    if not fresh:
        return []
    lines = _forget_wiped(repo, settings, client)
    result = bootstrap.initialize(client, settings.vault.unseal_key_shares, settings.vault.unseal_key_threshold)
    try:
        secretstore.write_held(repo, settings.name, UNSEAL_KEYS, json.dumps(list(result.unseal_keys)), environ)
        secretstore.write_held(repo, settings.name, ROOT_TOKEN, result.root_token, environ)
    except Exception as err:
        raise VaultError(client.url, f"initialised, but its unseal keys could not be stored ({err})",
                         "this server can never be unsealed: stop it, delete its data volume and run again") from err
    return lines + [f"initialised {client.url}: {len(result.unseal_keys)} unseal keys (threshold {result.threshold}) "
                    f"and the root token age-encrypted in secrets/{settings.name}/"]


# What belongs to one initialisation of the servers' data: meaningless once that data is gone.
_OF_THE_DATA = (UNSEAL_KEYS, ROOT_TOKEN, DEPLOYER)


def _forget_wiped(repo: Path, settings, client) -> list[str]:
    """A new server while keys of an earlier initialisation are stored: its data was deleted
    (`make down VOLUMES=1`). In a throw-away environment (secrets.generate_missing: local, ci)
    they are deleted and it starts afresh; in a real one nothing is deleted and the deploy stops."""
    stored = [name for name in _OF_THE_DATA if (repo / "secrets" / settings.name / f"{name}.age").exists()]
    if not stored:
        return []
    files = ", ".join(f"{name}.age" for name in stored)
    if not settings.secrets.generate_missing:
        raise VaultError(client.url, f"is not initialised, but secrets/{settings.name}/ holds {files} of an "
                         "earlier initialisation (was its data volume deleted?)",
                         "restore the servers' data from a raft snapshot; or, to start Vault afresh on purpose, "
                         f"move {files} out of secrets/{settings.name}/ and deploy again")
    for name in stored:
        secretstore.remove_held(repo, settings.name, name)
    return [f"the servers' data was deleted: {files} of the earlier initialisation deleted "
            "(a throw-away environment: secrets.generate_missing)"]


def _login(repo: Path, settings, active, want, environ) -> tuple[bool, list[str]]:
    """Give ``active`` a token to bootstrap with: the initial root token while it is stored
    (then the deployer's credential is made and stored first), else the deployer's AppRole.
    (whether it is the root token, what it did)."""
    root = secretstore.read_held(repo, settings.name, ROOT_TOKEN, environ)
    deployer = secretstore.read_held(repo, settings.name, DEPLOYER, environ)
    if root is None:
        if deployer is None:
            raise VaultError(f"secrets/{settings.name}/{DEPLOYER}.age", "missing, but the Vault servers are initialised",
                             "restore it from git; else see docs/secrets.md, 'Recovering the deployer'")
        bootstrap.login_deployer(active, deployer.value)
        return False, []
    active.token = root.value
    if deployer is not None:
        return True, []
    report = bootstrap.Report()
    bootstrap.ensure_deployer(active, report, want)
    secretstore.write_held(repo, settings.name, DEPLOYER, bootstrap.deployer_credential(active, want), environ)
    return True, [f"the deployer's AppRole credential age-encrypted in secrets/{settings.name}/"]


def _held(repo: Path, settings, name: str, environ) -> str:
    value = secretstore.read_held(repo, settings.name, name, environ)
    if value is None:
        raise VaultError(f"secrets/{settings.name}/{name}.age", "missing, but the Vault servers are initialised",
                         "restore it from git (whoever initialised the environment committed it)")
    return value.value


def _unseal_all(servers, keys: tuple[str, ...], timeout_s: float = 60) -> list[str]:
    """Every server unsealed; one that is not yet part of the raft cluster (a new follower's
    retry_join) is waited for, up to ``timeout_s``."""
    lines, deadline = [], time.monotonic() + timeout_s
    for name, client in servers:
        while True:
            try:
                if bootstrap.unseal(client, keys):
                    lines.append(f"unsealed {name}")
                break
            except Exception as err:  # a joining server is uninitialised until raft lets it in
                if time.monotonic() > deadline:
                    raise VaultError(client.url, f"{name} cannot be unsealed ({err})",
                                     f"check that it runs and reaches the others (make status ENV=..)") from err
                time.sleep(0.5)
    return lines


def _active(servers, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _, client in servers:
            try:
                if client.sys.read_leader_status().get("is_self"):
                    return client
            except Exception:  # not answering yet: ask the next
                pass
        time.sleep(0.3)
    raise VaultError(", ".join(c.url for _, c in servers), "no active server (no raft leader)",
                     "check the servers' logs (make logs SERVICE=vault)")


@contextlib.contextmanager
def _clients(repo: Path, settings, environ):
    """(instance, hvac client) of every server, trusting the environment's CA (a temporary file
    of its certificate: public)."""
    ca = ensure_ca(repo, settings, environ)
    with tempfile.NamedTemporaryFile("wb", suffix=".crt") as ca_file:
        ca_file.write(ca.cert_pem)
        ca_file.flush()
        yield [(name, bootstrap.client(address, ca_file.name)) for name, address in server_addresses(settings)]


def hand_off(settings, repo: Path, instances: tuple[str, ...], environ: dict[str, str] | None = None
             ) -> dict[str, dict[str, bytes]]:
    """Each instance a response-wrapped, single-use secret-id of its service's AppRole, issued
    as the deployer, valid as long as the secret-id it wraps (vault.approle.secret_id_ttl_s);
    and the CA certificate its TLS client checks the servers against."""
    service_of = {i.name: i.service.name for i in topology.build(settings).instances if i.name in instances}
    wrap_ttl = f"{settings.vault.approle.secret_id_ttl_s or 600}s"
    ca_cert = ensure_ca(repo, settings, environ).cert_pem
    with _clients(repo, settings, environ) as servers:
        active = _active(servers)
        bootstrap.login_deployer(active, _held(repo, settings, DEPLOYER, environ))
        try:
            return {inst: {WRAPPED_SECRET_ID: bootstrap.issue_secret_id(active, service_of[inst], wrap_ttl)[1].encode(),
                           CA_FILE: ca_cert}
                    for inst in instances}
        finally:
            bootstrap.revoke_self(active)


def run(settings, repo: Path, secrets: Mapping[str, str], environ: dict[str, str] | None = None,
        database_hosts: tuple[str, ...] | None = None) -> list[str]:
    """Everything, idempotently; returns what it did, one line each (nothing secret)."""
    with _clients(repo, settings, environ) as servers:
        lines = _initialise(repo, settings, servers[0][1], environ)
        keys = tuple(json.loads(_held(repo, settings, UNSEAL_KEYS, environ)))
        lines += _unseal_all(servers, keys)
        active = _active(servers)
        want = access.desired(settings, database_hosts or access.database_hosts(settings))
        # No root token lives past the first run: it makes the deployer's AppRole, whose short
        # tokens every later run logs in with, and is revoked and deleted once it has bootstrapped.
        as_root, done = _login(repo, settings, active, want, environ)
        lines += done
        try:
            lines.append(str(bootstrap.bootstrap(active, want, secrets[ISSUER_PASSWORD])))
            synced = bootstrap.sync_secrets(active, want, secrets)
            lines.append(f"service secrets: {len(synced.changed)} written or deleted, {len(synced.unchanged)} unchanged")
            stale = bootstrap.revoke_other_roots(active)
        except Exception:
            if not as_root:  # the stored root token stays valid for the next run to finish with
                bootstrap.revoke_self(active)
            raise
        bootstrap.revoke_self(active)
        if as_root:
            secretstore.remove_held(repo, settings.name, ROOT_TOKEN)
            lines.append(f"the initial root token revoked and deleted from secrets/{settings.name}/")
        if stale:
            lines.append(f"{stale} other root token(s) revoked")
    # Replaced copies for services that read them at run time (a rotation; a first version
    # replaces nothing): every running reader holds them before the rollout goes on to where
    # the servers drop the old value.
    reading = {service for _, service in LOG_IN} if settings.secrets.backend == "vault" else set()
    fresh = {key: version for key, version in synced.written.items() if key[0] in reading and version > 1}
    if fresh:
        lines += readers.wait_for_readers(settings, fresh, timeout_s=60)
    return lines


def preflight_line(name: str, url: str, seal: dict | None, error: str | None, keys_held: bool, env: str) -> str:
    """One server as the deploying machine finds it before touching a host → what to print; a
    VaultError (its address and seal status) when the rollout could not open it: sealed, and
    this checkout holds no unseal keys. Unreachable or not initialised is what a first deploy
    (or one after `make down`) finds: the rollout starts it, and its live setup stops the deploy,
    naming the address, if it then does not answer."""
    if error is not None:
        return f"{name} {url}: unreachable ({error}); the rollout starts it"
    if not seal.get("initialized"):
        return f"{name} {url}: not initialised; the rollout initialises it"
    progress = f"unseal progress {seal.get('progress', 0)}/{seal.get('t', '?')}"
    if seal["sealed"] and not keys_held:
        raise VaultError(url, f"{name} is sealed ({progress}) and secrets/{env}/ holds no {UNSEAL_KEYS}.age: the "
                         "deploy could not unseal it, and the services that log in to it would not start; nothing "
                         "was changed",
                         f"restore secrets/{env}/{UNSEAL_KEYS}.age from git (whoever initialised the environment "
                         "committed it), or unseal it by hand (bao operator unseal) and deploy again")
    if seal["sealed"]:
        return f"{name} {url}: sealed ({progress}); the rollout unseals it"
    return f"{name} {url}: unsealed"


def preflight(settings, repo: Path, environ: dict[str, str] | None = None) -> list[str]:
    """Every server's seal state before the deploy touches a host (Component.preflight): a sealed
    one this checkout cannot unseal stops it (preflight_line). Nothing to ask before the first
    deploy (no CA held yet: no server was ever made)."""
    ca = secretstore.read_held(repo, settings.name, CA_CERT, environ)
    if ca is None:
        return []
    keys_held = (repo / "secrets" / settings.name / f"{UNSEAL_KEYS}.age").exists()
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca_file:
        ca_file.write(ca.value)
        ca_file.flush()

        def seal_state(address: str) -> tuple[dict | None, str | None]:
            # A first deploy's server is not there yet: do not wait long for it.
            client = bootstrap.client(address, ca_file.name, timeout=3)
            try:
                return client.sys.read_seal_status(), None
            except requests.RequestException as err:
                return None, type(err).__name__

        servers = server_addresses(settings)
        # Every server asked at once (a TLS handshake each, ~0.1 s on a busy machine: a deploy
        # waits for this before it touches a host); the lines in the servers' order.
        with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
            states = list(pool.map(seal_state, [address for _, address in servers]))
    return [preflight_line(name, address, seal, error, keys_held, settings.name)
            for (name, address), (seal, error) in zip(servers, states)]


def _server_state(client) -> tuple[str, bool]:
    """One server's state for an operator, and whether it serves (unsealed, answering)."""
    try:
        seal = client.sys.read_seal_status()
    except requests.RequestException as err:
        return f"unreachable ({type(err).__name__})", False
    if not seal["initialized"]:
        return "not initialised", False
    if seal["sealed"]:
        return f"sealed (unseal progress {seal['progress']}/{seal['t']})", False
    leader = client.sys.read_leader_status()
    role = "leader" if leader.get("is_self") else "standby"
    return f"unsealed, {role}, OpenBao {seal.get('version', '?')}", True


def status(settings, repo: Path, environ: dict[str, str] | None = None) -> tuple[list[str], bool]:
    """Each server's seal state and raft role (no token needed); True when every one serves."""
    lines, healthy = [], True
    with _clients(repo, settings, environ) as servers:
        for name, client in servers:
            state, serves = _server_state(client)
            lines.append(f"{name}  {client.url}  {state}")
            healthy = healthy and serves
    return lines, healthy


def _reads_back(active, service: str, copies: tuple[tuple[str, str], ...], secrets: Mapping[str, str]) -> list[str]:
    """Log in as ``service`` (a fresh single-use secret-id, as the deploy hands it) and read each
    of its copies: the names whose value differs from the store's (empty: all match)."""
    role_id, wrapped = bootstrap.issue_secret_id(active, service, "60s")
    ca_file = active.session.verify  # the environment's CA, as the deployer's client trusts it
    secret_id = bootstrap.client(active.url, ca_file, wrapped).sys.unwrap()["data"]["secret_id"]
    as_service = bootstrap.client(active.url, ca_file)
    as_service.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=access.APPROLE_MOUNT)
    try:
        return [name for name, secret in copies if secret in secrets and bootstrap.read_copy(
            as_service, f"{access.kv_path(service)}/{name}") != secrets[secret]]
    finally:
        bootstrap.revoke_self(as_service)


def migrate(settings, repo: Path, secrets: Mapping[str, str], environ: dict[str, str] | None = None,
            database_hosts: tuple[str, ...] | None = None) -> list[str]:
    """`make secrets-migrate TO=vault`: every secret the services read under ``secrets.backend:
    vault`` copied into the environment's Vault (as the next deploy on that backend would), then
    read back by each service that logs in, as itself; what to do next. The age store stays the
    deploy's own copy (the data servers read files), so nothing is removed from it."""
    on_vault = settings.model_copy(update={"secrets": settings.secrets.model_copy(update={"backend": "vault"})})
    lines = []
    with _clients(repo, settings, environ) as servers:
        for name, client in servers:
            state, serves = _server_state(client)
            if not serves:
                raise VaultError(client.url, f"{name} is {state}", f"make up ENV={settings.name} first (it unseals "
                                 "the servers); nothing was copied")
        active = _active(servers)
        bootstrap.login_deployer(active, _held(repo, settings, DEPLOYER, environ))
        try:
            want = access.desired(on_vault, database_hosts or access.database_hosts(on_vault))
            lines.append(str(bootstrap.bootstrap(active, want, secrets[ISSUER_PASSWORD])))
            synced = bootstrap.sync_secrets(active, want, secrets)
            lines.append(f"service secrets: {len(synced.changed)} written or deleted, {len(synced.unchanged)} unchanged")
            logging_in = {service for _, service in LOG_IN}
            for svc in want.services:
                if svc.service not in logging_in:
                    continue
                differ = _reads_back(active, svc.service, svc.secrets, secrets)
                if differ:
                    raise VaultError(active.url, f"{svc.service} reads {', '.join(differ)} from Vault with another "
                                     "value than secrets/" + settings.name + "/ holds", "run make secrets-migrate again; "
                                     "if it persists, check that nothing else writes under secret/services/")
                lines.append(f"{svc.service}: logged in as itself and read its {len(svc.secrets)} copies: all match "
                             f"secrets/{settings.name}/")
        finally:
            bootstrap.revoke_self(active)
    if settings.secrets.backend == "vault":
        lines.append(f"{settings.name} already takes its secrets from Vault: nothing else to do")
    else:
        lines.append(f"next: set \"backend\": \"vault\" under \"secrets\" in inventories/{settings.name}.py and "
                     f"deploy (make up / make deploy ENV={settings.name}): the API and workers are recreated "
                     "without secret files and take everything from Vault")
    return lines
