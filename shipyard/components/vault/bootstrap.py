"""Initialise, unseal and bootstrap the environment's Vault (OpenBao) with hvac, idempotently.

Controller-side I/O from the deploying machine (like consul/kv.py): never imported by the
registry or the render (tests/unit/test_vault.py checks that ``make render`` loads no hvac).

- ``initialize``: a new server's unseal keys and root token (None when it already is), for the
  caller to age-encrypt at once; nothing here writes or prints them (their repr is ``***``);
- ``unseal``: the keys up to the threshold, when sealed;
- ``bootstrap``: what access.py says the server must hold — KV v2, AppRole auth, one policy and
  one AppRole per service, the database engine's connection and one role per application role —
  written only where it differs, and the declared audit device checked. Its ``Report`` says what
  it changed; a second run changes nothing and says so;
- ``sync_secrets``: each service's copies of its stored secrets under its own KV path, written
  only when the value differs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import hvac
import hvac.exceptions

from shipyard.components.vault import AUDIT_PATH
from shipyard.components.vault.access import (APPROLE_MOUNT, DATABASE_CONNECTION, DATABASE_MOUNT, DEPLOY_RECORDS,
                                              KV_MOUNT, Desired, deployer_policy_hcl)
from shipyard.errors import ShipyardError


class VaultError(ShipyardError):
    """A Vault server refused or is not in the state the step needs."""


@dataclass(frozen=True)
class InitResult:
    unseal_keys: tuple[str, ...]
    root_token: str
    threshold: int

    def __repr__(self) -> str:
        return f"InitResult({len(self.unseal_keys)} unseal keys=***, root_token=***, threshold={self.threshold})"

    __str__ = __repr__


@dataclass
class Report:
    """What a bootstrap changed and what it found as it should be, one line each."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def note(self, what: str, changed: bool, how: str = "") -> None:
        (self.changed if changed else self.unchanged).append(f"{what}: {how}" if changed and how else what)

    def add(self, other: Report) -> None:
        self.changed += other.changed
        self.unchanged += other.unchanged

    def __str__(self) -> str:
        if not self.changed:
            return f"vault: nothing to change ({len(self.unchanged)} items already as they should be)"
        return "vault: changed " + "; ".join(self.changed) + f" ({len(self.unchanged)} unchanged)"


# What one step asks the server for item by item (a policy, an AppRole, a service's copy of a
# secret) does not depend on the other items: asked at once. A no-op deploy asks ~160 reads,
# ~3 ms each when one follows the other (docs/benchmarks.md). Below requests' pool of 10
# connections a server, past which it would open and drop connections (and warn).
AT_ONCE = 8


def at_once(calls: Sequence[Callable[[Report], None]], report: Report) -> None:
    """Each of ``calls`` with a report of its own, concurrently; their notes added to ``report``
    in the order of ``calls``, so what a run prints does not depend on which answered first. The
    first call (in that order) that failed raises, once every call ended."""
    own = [type(report)() for _ in calls]
    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        futures = [pool.submit(call, mine) for call, mine in zip(calls, own)]
    for future, mine in zip(futures, own):
        future.result()
        report.add(mine)


def client(address: str, ca_cert: str, token: str | None = None, timeout: float = 10) -> hvac.Client:
    """A client of one server, verifying its certificate against the environment's CA file."""
    return hvac.Client(url=address, verify=ca_cert, token=token, timeout=timeout)


# sys/init answers once raft has elected the new node and stored the first keys: 6.5–9.5 s
# measured on an idle 2-core machine here, past the clients' 10 s under any load.
INIT_TIMEOUT_S = 120


def initialize(vault: hvac.Client, shares: int = 5, threshold: int = 3) -> InitResult | None:
    """Initialise a new server; None when it already is (then nothing changes)."""
    if vault.sys.is_initialized():
        return None
    result = vault.adapter.put("/v1/sys/init", json={"secret_shares": shares, "secret_threshold": threshold},
                               timeout=INIT_TIMEOUT_S)
    return InitResult(tuple(result["keys_base64"]), result["root_token"], threshold)


def unseal(vault: hvac.Client, keys: tuple[str, ...]) -> bool:
    """Unseal with as many keys as it takes; False when it was not sealed."""
    status = vault.sys.read_seal_status()
    if not status["sealed"]:
        return False
    for key in keys:
        status = vault.sys.submit_unseal_key(key)
        if not status["sealed"]:
            return True
    raise VaultError(vault.url, f"still sealed after {len(keys)} unseal keys (threshold {status['t']})",
                     "give the environment's unseal keys (secrets/<env>/vault_unseal_keys.age)")


def revoke_other_roots(vault: hvac.Client) -> int:
    """Revoke every root token but the client's own (one an operator made and left standing);
    how many."""
    own = vault.auth.token.lookup_self()["data"]["accessor"]
    try:
        accessors = vault.auth.token.list_accessors()["data"]["keys"]
    except hvac.exceptions.InvalidPath:  # the server lists none
        return 0
    revoked = 0
    for accessor in accessors:
        if accessor == own:
            continue
        try:
            policies = vault.auth.token.lookup_accessor(accessor)["data"]["policies"]
        except hvac.exceptions.InvalidRequest:  # expired meanwhile
            continue
        if "root" in policies:
            vault.auth.token.revoke_accessor(accessor)
            revoked += 1
    return revoked


def revoke_self(vault: hvac.Client) -> None:
    """Revoke the token the client holds (the bootstrap's root token, once done)."""
    vault.auth.token.revoke_self()
    vault.token = None


def wait_active(vault: hvac.Client, timeout_s: float = 30) -> None:
    """Until the server answers as the active node (raft elected it, unsealed)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = vault.sys.read_health_status(method="GET", standby_ok=False)
            code = getattr(health, "status_code", 200)
            if code == 200:
                return
            last = f"health {code}"
        except (hvac.exceptions.VaultError, OSError) as err:
            last = str(err)
        time.sleep(0.2)
    raise VaultError(vault.url, f"not active after {timeout_s:.0f} s ({last})",
                     "check that it is unsealed and that a raft leader is elected (bao operator raft list-peers)")


def _listing(response) -> dict:
    data = response.get("data", response) if isinstance(response, dict) else {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _ensure_mount(vault: hvac.Client, report: Report, path: str, kind: str, options: dict | None = None) -> None:
    mounts = _listing(vault.sys.list_mounted_secrets_engines())
    found = mounts.get(f"{path}/")
    if found is None:
        vault.sys.enable_secrets_engine(backend_type=kind, path=path, options=options)
        if kind == "kv":
            _wait_kv_ready(vault, path)
        report.note(f"secrets engine {kind} at {path}/", True, "enabled")
        return
    if found["type"] != kind or any((found.get("options") or {}).get(k) != v for k, v in (options or {}).items()):
        raise VaultError(f"{vault.url} {path}/", f"holds a {found['type']} engine {found.get('options')}, not {kind} {options}",
                         f"move what is there and disable it (bao secrets disable {path}), then bootstrap again")
    report.note(f"secrets engine {kind} at {path}/", False)


def _wait_kv_ready(vault: hvac.Client, path: str, timeout_s: float = 30) -> None:
    """A new KV v2 mount answers "Upgrading from non-versioned to versioned data ... unavailable
    for a brief period" for a moment (seen on OpenBao 2.7.2, on a raft cluster): wait until a data
    read answers (a 404 for a secret that is not there is an answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            vault.secrets.kv.v2.read_secret_version(path="shipyard-ready-probe", mount_point=path,
                                                    raise_on_deleted_version=True)
            return
        except hvac.exceptions.InvalidPath:
            return
        except hvac.exceptions.VaultError as err:
            if time.monotonic() > deadline:
                raise VaultError(f"{vault.url} {path}/", f"the new KV v2 mount is not ready after {timeout_s:.0f} s ({err})",
                                 "check the server's log; run the bootstrap again") from err
            time.sleep(0.2)


def _ensure_auth(vault: hvac.Client, report: Report, path: str, kind: str) -> None:
    methods = _listing(vault.sys.list_auth_methods())
    found = methods.get(f"{path}/")
    if found is None:
        vault.sys.enable_auth_method(method_type=kind, path=path)
        report.note(f"auth method {kind} at {path}/", True, "enabled")
    elif found["type"] != kind:
        raise VaultError(f"{vault.url} auth/{path}/", f"holds a {found['type']} auth method, not {kind}",
                         f"disable it (bao auth disable {path}), then bootstrap again")
    else:
        report.note(f"auth method {kind} at {path}/", False)


def _ensure_policy(vault: hvac.Client, report: Report, name: str, rules: str) -> None:
    found = vault.read(f"sys/policies/acl/{name}")
    current = (found or {}).get("data", {}).get("policy")
    if current == rules:
        report.note(f"policy {name}", False)
        return
    vault.sys.create_or_update_acl_policy(name=name, policy=rules)  # the path the deployer may write
    report.note(f"policy {name}", True, "written" if current is None else "updated")


def _differs(current: Mapping, wanted: Mapping) -> list[str]:
    return sorted(k for k, v in wanted.items() if current.get(k) != v)


def _ensure_config(vault: hvac.Client, report: Report, what: str, path: str, wanted: dict,
                   extra: dict | None = None) -> None:
    """Write ``wanted`` (+ ``extra``: written, never compared — a password) at ``path`` unless
    what the server reads back there already holds ``wanted``."""
    found = vault.read(path)
    current = (found or {}).get("data") or {}
    differ = _differs(current, wanted) if found else ["all"]
    if not differ:
        report.note(what, False)
        return
    vault.write_data(path, data={**wanted, **(extra or {})})
    report.note(what, True, "created" if not found else "updated (" + ", ".join(differ) + ")")


def _check_audit(vault: hvac.Client, report: Report) -> None:
    devices = _listing(vault.sys.list_enabled_audit_devices())
    if f"{AUDIT_PATH}/" not in devices:
        raise VaultError(f"{vault.url} sys/audit", f"no audit device at {AUDIT_PATH}/ (found: {sorted(devices) or 'none'})",
                         "the server config declares it (templates/vault/server.hcl.j2): check the config the server "
                         "was started with and that it can write its audit file")
    report.note(f"audit device {AUDIT_PATH}/ ({devices[f'{AUDIT_PATH}/']['type']})", False)


def read_copy(vault: hvac.Client, path: str) -> str | None:
    """The value of a service's copy at ``path`` under the KV mount (None: there is none)."""
    return _read_kv(vault, path).get("value")


def _read_kv(vault: hvac.Client, path: str) -> dict:
    try:
        return vault.secrets.kv.v2.read_secret_version(path=path, mount_point=KV_MOUNT,
                                                       raise_on_deleted_version=True)["data"]["data"]
    except hvac.exceptions.InvalidPath:
        return {}


def _database(vault: hvac.Client, report: Report, want: Desired, admin_password: str, sslmode: str) -> None:
    _ensure_mount(vault, report, DATABASE_MOUNT, "database")
    url = (f"postgresql://{{{{username}}}}:{{{{password}}}}@{','.join(want.database_hosts)}/{want.database_name}"
           f"?sslmode={sslmode}" + ("&target_session_attrs=read-write" if len(want.database_hosts) > 1 else ""))
    wanted = {"plugin_name": "postgresql-database-plugin",
              "allowed_roles": sorted(r.name for r in want.database_roles),
              "connection_details": {"connection_url": url, "username": want.database_admin,
                                     "password_authentication": "scram-sha-256"}}
    found = vault.read(f"{DATABASE_MOUNT}/config/{DATABASE_CONNECTION}")
    current = (found or {}).get("data") or {}
    shown = {"plugin_name": current.get("plugin_name"), "allowed_roles": sorted(current.get("allowed_roles") or []),
             "connection_details": {k: (current.get("connection_details") or {}).get(k)
                                    for k in wanted["connection_details"]}}
    differ = _differs(shown, wanted) if found else ["all"]
    # The server never reads back the password: its fingerprint, kept beside, says it changed.
    record = f"{DEPLOY_RECORDS}/database-connection"
    fingerprint = hashlib.sha256(admin_password.encode()).hexdigest()
    if found and _read_kv(vault, record).get("password_sha256") != fingerprint:
        differ.append("password")
    if differ:
        try:
            vault.write_data(f"{DATABASE_MOUNT}/config/{DATABASE_CONNECTION}", data={
                "plugin_name": wanted["plugin_name"], "allowed_roles": wanted["allowed_roles"], "connection_url": url,
                "username": want.database_admin, "password": admin_password,
                "password_authentication": "scram-sha-256", "verify_connection": True})
        except hvac.exceptions.InvalidRequest as err:  # the server checks the connection first
            raise VaultError(f"{vault.url} {DATABASE_MOUNT}/config/{DATABASE_CONNECTION}",
                             f"Vault cannot connect to PostgreSQL at {', '.join(want.database_hosts)} as "
                             f"{want.database_admin}: {str(err).split(', on post')[0]}",
                             "check that PostgreSQL runs and that the Vault servers reach it, then run again (it carries on where this stopped)") from err
    if differ:
        vault.secrets.kv.v2.create_or_update_secret(path=record, secret={"password_sha256": fingerprint},
                                                    mount_point=KV_MOUNT)
    report.note(f"database connection {DATABASE_CONNECTION}", bool(differ),
                "created" if not found else "updated (" + ", ".join(differ) + ")")
    at_once([lambda r, role=role: _ensure_config(vault, r, f"database role {role.name}", f"{DATABASE_MOUNT}/roles/{role.name}", {
        "db_name": DATABASE_CONNECTION, "default_ttl": role.ttl_s, "max_ttl": role.max_ttl_s,
        "creation_statements": list(role.creation_statements),
        "revocation_statements": list(role.revocation_statements)}) for role in want.database_roles], report)


def ensure_deployer(vault: hvac.Client, report: Report, want: Desired) -> None:
    """The deployer's policy and AppRole (the deploying machine's identity after the first run)."""
    _ensure_auth(vault, report, APPROLE_MOUNT, "approle")
    _ensure_policy(vault, report, want.deployer.policy, deployer_policy_hcl())
    _ensure_config(vault, report, f"approle {want.deployer.service}",
                   f"auth/{APPROLE_MOUNT}/role/{want.deployer.service}", want.deployer.params())


def deployer_credential(vault: hvac.Client, want: Desired) -> str:
    """A new secret-id of the deployer's AppRole with its role-id, as JSON (for the held store)."""
    role = want.deployer.service
    role_id = vault.auth.approle.read_role_id(role_name=role, mount_point=APPROLE_MOUNT)["data"]["role_id"]
    secret_id = vault.auth.approle.generate_secret_id(role_name=role, mount_point=APPROLE_MOUNT)["data"]["secret_id"]
    return json.dumps({"role_id": role_id, "secret_id": secret_id})


def login_deployer(vault: hvac.Client, credential: str) -> None:
    """Log ``vault`` in as the deployer (its token set on the client)."""
    found = json.loads(credential)
    try:
        vault.auth.approle.login(role_id=found["role_id"], secret_id=found["secret_id"], mount_point=APPROLE_MOUNT)
    except hvac.exceptions.InvalidRequest as err:
        raise VaultError(f"{vault.url} auth/{APPROLE_MOUNT}/login", f"refused the deployer's credential ({err})",
                         "its secret-id was revoked or the AppRole changed: make a new one with a root token "
                         "(docs/secrets.md, 'Recovering the deployer')") from err


def bootstrap(vault: hvac.Client, want: Desired, admin_password: str, sslmode: str = "disable") -> Report:
    """Make the server hold ``want`` (with a token allowed to: the root token at the first
    bootstrap, the deployer's after). ``admin_password``: the password of the role the database
    connection uses (the platform's issuer role)."""
    if vault.sys.read_seal_status()["sealed"]:
        raise VaultError(vault.url, "is sealed", "unseal it first (the deploy does: bootstrap.unseal)")
    report = Report()
    # The AppRole auth method (ensure_deployer makes it) before the services' AppRoles; a policy
    # may be named by an AppRole before it exists.
    at_once([lambda r: _check_audit(vault, r), lambda r: _ensure_mount(vault, r, KV_MOUNT, "kv", {"version": "2"}),
             lambda r: ensure_deployer(vault, r, want),
             *(lambda r, svc=svc: _ensure_policy(vault, r, svc.policy, svc.policy_hcl()) for svc in want.services)],
            report)
    at_once([*(lambda r, role=role: _ensure_approle(vault, r, role) for role in want.approles),
             *([lambda r: _database(vault, r, want, admin_password, sslmode)] if want.database_roles else [])], report)
    return report


def _ensure_approle(vault: hvac.Client, report: Report, role) -> None:
    _ensure_config(vault, report, f"approle {role.service}", f"auth/{APPROLE_MOUNT}/role/{role.service}", role.params())
    current = vault.auth.approle.read_role_id(role_name=role.service, mount_point=APPROLE_MOUNT)["data"]["role_id"]
    if current != role.role_id:
        vault.auth.approle.update_role_id(role_name=role.service, role_id=role.role_id, mount_point=APPROLE_MOUNT)
    report.note(f"approle {role.service} role-id", current != role.role_id, "set")


@dataclass
class Synced(Report):
    """sync_secrets' report, and the version each written copy now has: (service, name) → version
    (what a service's keeper reports once it holds it: setup.wait_for_readers)."""

    written: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, other: Report) -> None:
        super().add(other)
        self.written.update(getattr(other, "written", {}))


def _kv_names(vault: hvac.Client, path: str) -> list[str]:
    try:
        return [n for n in vault.secrets.kv.v2.list_secrets(path=path, mount_point=KV_MOUNT)["data"]["keys"]
                if not n.endswith("/")]
    except hvac.exceptions.InvalidPath:
        return []


def sync_secrets(vault: hvac.Client, want: Desired, values: Mapping[str, str]) -> Synced:
    """Each service's copy of each stored secret it reads, at ``secret/services/<service>/<name>``
    (``{"value": ...}``), written only when it differs; a copy it no longer reads deleted with
    its versions. Values absent from ``values`` are skipped."""
    report = Synced()

    def unread(svc, r: Synced) -> None:
        for name in sorted(set(_kv_names(vault, svc.kv_path)) - set(dict(svc.secrets))):
            vault.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{svc.kv_path}/{name}", mount_point=KV_MOUNT)
            r.note(f"{KV_MOUNT}/{svc.kv_path}/{name}", True, "deleted (no longer read)")

    def copy(svc, name: str, value: str, r: Synced) -> None:
        path = f"{svc.kv_path}/{name}"
        same = _read_kv(vault, path) == {"value": value}
        if not same:
            written = vault.secrets.kv.v2.create_or_update_secret(path=path, secret={"value": value}, mount_point=KV_MOUNT)
            r.written[(svc.service, name)] = int(written["data"]["version"])
        r.note(f"{KV_MOUNT}/{path}", not same, "written")

    calls = []
    for svc in want.services:
        calls.append(lambda r, svc=svc: unread(svc, r))
        calls += [lambda r, svc=svc, name=name, secret=secret: copy(svc, name, values[secret], r)
                  for name, secret in svc.secrets if secret in values]
    at_once(calls, report)
    return report


def issue_secret_id(vault: hvac.Client, service: str, wrap_ttl: str = "120s") -> tuple[str, str]:
    """(role-id, a response-wrapped secret-id token) for one service's AppRole: what the deploy
    hands a service (the role-id is config; the wrapped secret-id is single use: whoever unwraps
    it first gets the secret-id, and the service sees a refused unwrap if someone did before it)."""
    role_id = vault.auth.approle.read_role_id(role_name=service, mount_point=APPROLE_MOUNT)["data"]["role_id"]
    wrapped = vault.auth.approle.generate_secret_id(role_name=service, mount_point=APPROLE_MOUNT, wrap_ttl=wrap_ttl)
    return role_id, wrapped["wrap_info"]["token"]
