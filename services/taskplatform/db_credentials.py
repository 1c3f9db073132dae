"""Dynamic PostgreSQL credentials from Vault, and the pools that follow them.

Two halves, because the API runs several uvicorn processes and a wrapped secret-id logs in once:

- ``CredentialKeeper`` — one per container, in the process that starts it (the API's uvicorn
  supervisor, the worker itself), on a thread of its own (hvac is synchronous): logs in
  (``vault_client``), reads ``<mount>/creds/<role>``, renews the lease and the token half-way
  through what each was granted, and writes what the processes need — user, password, when the
  lease ends, a generation — to ``<vault_state_dir>/postgres.json`` (0600, by rename; a tmpfs).
  Beside it, ``lease.json`` (0644, by rename, nothing secret): the user, when the lease and the
  token end, the generation and whether calls to Vault are failing — what `make status` shows.
  When a renewal is refused or granted less than asked (the lease's max TTL is near) it gets new
  credentials at once, while the old ones still have half a TTL to run; the old user's lease is
  revoked (its token, after a new login) only once no session of it is left on any node
  (``pg_stat_activity``), else left to Vault, which ends it at its expiry. A refused token
  renewal or one near its max TTL: a new login, new credentials under the new token (the old
  token's leases die with it), then the old token revoked the same way. Vault unreachable or
  sealed: each failed call is counted (``vault_errors_total{operation}``) and logged, retried
  with a backoff, and what is held is kept until it runs out; ``lease.json`` says so (failures in a
  row, in all, the last reason) until a call succeeds again.
- ``PoolCredentials`` — in every process with pools: watches that file and, on a new
  generation, gives each pool the new user for its new connections (``Pool.set_connect_args``)
  and expires the old ones (``Pool.expire_connections``: an idle connection is replaced at its
  next acquire, one in use is closed when released), so no query fails for the switch.
  ``problem`` is what readiness says once the held lease has ended and no new one came.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import hvac

from taskplatform import metrics, store
from taskplatform.settings import ProcessSettings
from taskplatform.vault_client import REFUSED, UNAVAILABLE, VaultSession, reason, write_private

log = logging.getLogger("taskplatform.vault")

CREDENTIALS_FILE = "postgres.json"
STATUS_FILE = "lease.json"  # what `make status` reads: no secret (CredentialKeeper._write_status)
KV_DIR = "secrets"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    expires_at: float  # time.time() when the lease ends, as last renewed
    generation: int

    def problem(self, now: float | None = None) -> str | None:
        if (now or time.time()) < self.expires_at:
            return None
        return (f"postgresql credentials: the lease of {self.username} ended "
                f"{time.strftime('%H:%M:%SZ', time.gmtime(self.expires_at))} and Vault gave no new one")


def read_credentials(state_dir: str | Path) -> Credentials:
    doc = json.loads((Path(state_dir) / CREDENTIALS_FILE).read_text())
    return Credentials(doc["username"], doc["password"], doc["expires_at"], doc["generation"])


@dataclass
class Lease:
    lease_id: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    ttl_s: int  # what a renewal asks for: the role's default TTL
    expires_at: float
    renewed_at: float
    client: hvac.Client = field(repr=False)  # whose token made it: the lease dies with that token
    next_check: float = 0.0  # draining: when to look for its sessions again

    def renew_due_at(self) -> float:
        return self.renewed_at + (self.expires_at - self.renewed_at) / 2


def status_document(lease: Lease, token_expires_at: float | None, generation: int, failing: int,
                    errors_total: int, last_error: dict | None, now: float) -> dict:
    """The keeper's state for an operator (``lease.json``): names and times only — never the
    password, the lease id or a token."""
    return {"username": lease.username, "lease_ttl_s": lease.ttl_s, "lease_expires_at": round(lease.expires_at, 3),
            "token_expires_at": None if token_expires_at is None else round(token_expires_at, 3),
            "generation": generation, "failing": failing, "errors_total": errors_total, "last_error": last_error,
            "updated_at": round(now, 3)}


def write_public(path: Path, text: str) -> None:
    """``text`` to ``path`` (0644) by rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)  # whatever the umask
    os.replace(tmp, path)


def _retry_in(expires_at: float, now: float) -> float:
    """After a failed call: soon while much is left, never later than 5 s."""
    return min(5.0, max(0.5, (expires_at - now) / 4))


class CredentialKeeper:
    TICK_SECONDS = 0.25

    def __init__(self, settings: ProcessSettings):
        self.settings = settings
        self.state_dir = Path(settings.vault_state_dir)
        self.session = VaultSession(settings.vault_addr, settings.vault_ca_file, settings.vault_role_id,
                                    Path(settings.secrets_dir) / settings.vault_wrapped_secret_id, self.state_dir,
                                    settings.vault_timeout_seconds, settings.vault_approle_mount,
                                    Path(settings.vault_token_file) if settings.vault_token_file else None)
        self.lease: Lease | None = None
        self.draining: list[Lease] = []
        self.generation = 0
        self._token_next = self._lease_next = self._kv_next = 0.0
        self._rotate_pending = False
        self._kv_versions: dict[str, int] = {}
        self._refresh_seen: int | None = None
        self._ended_logged = False
        self._lease_revoke_refused = False
        # Calls to Vault that failed: in a row (0 once one succeeds), in all, and the last one's
        # operation, reason and time (lease.json).
        self.failing = self.errors_total = 0
        self.last_error: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """The first login and credentials, synchronously (``VaultStartError`` or a Vault error
        when they cannot be had: the process does not start), then the thread that keeps them."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.session.start()
        self._token_next = self.session.renew_due_at()
        self._rotate("first credentials")
        if self.lease is None:
            raise RuntimeError(f"no PostgreSQL credentials from Vault at {self.settings.vault_addr} "
                               f"({self.settings.vault_database_mount}/creds/{self.settings.vault_db_role}); "
                               f"see the log line before")
        if self.settings.vault_kv_path:
            self._refresh_kv()
            self._asked_to_refresh()  # what a deploy asked before this start is read already
        self._thread = threading.Thread(target=self._run, name="vault-credentials", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop keeping; revoke the token (and with it the leases it made): call once the pools
        are closed. A kept token (``vault_token_file``) is left for the container's next start,
        which resumes it; unrenewed, it ends a period later, its leases with it."""
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if self.session.token and not self.session.token_file:
            self.session.revoke(self.session.client)

    def _run(self) -> None:
        while not self._stop.wait(self.TICK_SECONDS):
            try:
                self._step(time.time())
            except Exception:  # noqa: BLE001 - a bug: said, and the keeping goes on
                log.exception("credential keeping step failed")

    def _step(self, now: float) -> None:
        if now >= self._token_next:
            self._keep_token(now)
        if self._rotate_pending and now >= self._lease_next:
            self._rotate("retry")
        elif self.lease and now >= self._lease_next:
            self._keep_lease(now)
        if self.draining:
            self._drain(now)
        if self.settings.vault_kv_path and (now >= self._kv_next or self._asked_to_refresh()):
            self._refresh_kv()
        if self.lease and now >= self.lease.expires_at and not self._ended_logged:
            self._ended_logged = True
            log.error("the PostgreSQL lease ended and Vault gave no new one: new connections are refused, "
                      "readiness fails", extra={"username": self.lease.username})

    def _asked_to_refresh(self) -> bool:
        """The deploy wrote new copies and touched ``vault_refresh_file``: read them now, not at
        the next poll (a stat per tick; no request to Vault until asked, or the poll is due)."""
        if not self.settings.vault_refresh_file:
            return False
        try:
            stamp = os.stat(self.settings.vault_refresh_file).st_mtime_ns
        except OSError:
            return False
        asked, self._refresh_seen = stamp != self._refresh_seen, stamp
        return asked

    def _failed(self, operation: str, exc: BaseException, retry_in: float) -> None:
        metrics.VAULT_ERRORS.labels(operation=operation).inc()
        self.failing += 1
        self.errors_total += 1
        self.last_error = {"operation": operation, "reason": reason(exc), "at": round(time.time(), 3)}
        self._write_status()
        held = (self.lease.expires_at - time.time()) if self.lease else None
        log.warning("vault call failed; keeping what is held", extra={
            "operation": operation, "reason": reason(exc), "retry_in_s": round(retry_in, 2),
            "lease_left_s": None if held is None else round(held, 1)})

    # --- the token ------------------------------------------------------------------------
    def _keep_token(self, now: float) -> None:
        try:
            granted = self.session.renew()
        except REFUSED as exc:
            log.info("token renewal refused: logging in again", extra={"reason": reason(exc)})
            self._login_again(now)
            return
        except UNAVAILABLE as exc:
            retry = _retry_in(self.session.token.expires_at, now)
            self._failed("renew_token", exc, retry)
            self._token_next = now + retry
            return
        self._succeeded()
        if granted < self.session.token.ttl_s:  # its max TTL is near: a new token while this one lasts
            log.info("token near its max TTL: logging in again", extra={"granted_s": granted})
            self._login_again(now)
        else:
            self._token_next = self.session.renew_due_at()

    def _login_again(self, now: float) -> None:
        try:
            self.session.login()
        except (*UNAVAILABLE, *REFUSED) as exc:
            retry = 30.0 if self.session.secret_id_spent else _retry_in(self.session.token.expires_at, now)
            self._failed("login", exc, retry)
            if self.session.secret_id_spent:
                log.error("the secret-id was refused at a new login: this process cannot log in again until it "
                          "is given a fresh one (restart with one from the deploy; the AppRole's "
                          "secret_id_num_uses must be 0 or above 1 for in-process re-login)")
            self._token_next = now + retry
            return
        self._token_next = self.session.renew_due_at()
        self._succeeded()
        # The old token's leases end with it: new credentials under the new token now; the old
        # token is revoked once the pools left its user (``_drain``).
        self._rotate("new token")

    # --- the lease ------------------------------------------------------------------------
    def _keep_lease(self, now: float) -> None:
        lease = self.lease
        try:
            granted = int(self.session.client.sys.renew_lease(lease_id=lease.lease_id,
                                                                increment=lease.ttl_s)["lease_duration"])
        except REFUSED as exc:
            log.info("lease renewal refused: new credentials", extra={"reason": reason(exc),
                                                                       "username": lease.username})
            self._rotate("lease refused")
            return
        except UNAVAILABLE as exc:
            retry = _retry_in(lease.expires_at, now)
            self._failed("renew_lease", exc, retry)
            self._lease_next = now + retry
            return
        lease.expires_at, lease.renewed_at = now + granted, now
        self._ended_logged = False
        self.failing = 0
        self._publish()
        if granted < lease.ttl_s:  # the max TTL is near: switch while this one still runs
            self._rotate("lease near its max TTL")
        else:
            self._lease_next = lease.renew_due_at()

    def _rotate(self, why: str) -> None:
        now = time.time()
        try:
            reply = self.session.client.secrets.database.generate_credentials(
                name=self.settings.vault_db_role, mount_point=self.settings.vault_database_mount)
        except (*UNAVAILABLE, *REFUSED) as exc:
            retry = _retry_in(self.lease.expires_at, now) if self.lease else 1.0
            self._failed("credentials", exc, retry)
            self._rotate_pending, self._lease_next = True, now + retry
            if self.lease is None:
                log.error("no PostgreSQL credentials from Vault", extra={"reason": reason(exc)})
            return
        old = self.lease
        self.lease = Lease(reply["lease_id"], reply["data"]["username"], reply["data"]["password"],
                           int(reply["lease_duration"]), now + reply["lease_duration"], now, self.session.client)
        self._rotate_pending, self._ended_logged = False, False
        self._lease_next = self.lease.renew_due_at()
        self.generation += 1
        self.failing = 0
        self._publish()
        log.info("new PostgreSQL credentials", extra={"why": why, "username": self.lease.username,
                                                      "ttl_s": self.lease.ttl_s,
                                                      "previous": old.username if old else None})
        if old is not None:
            old.next_check = now + 2 * self.settings.vault_credentials_poll_seconds
            self.draining.append(old)

    def _publish(self) -> None:
        lease = self.lease
        write_private(self.state_dir / CREDENTIALS_FILE, json.dumps({
            "username": lease.username, "password": lease.password, "expires_at": lease.expires_at,
            "generation": self.generation}))
        metrics.DB_CREDENTIALS_EXPIRY.set(lease.expires_at)
        self._write_status()

    def _succeeded(self) -> None:
        """A call to Vault went through: no longer failing (lease.json says so, with the token's new end)."""
        self.failing = 0
        self._write_status()

    def _write_status(self) -> None:
        """``lease.json``: what `make status` shows of this container (nothing secret). Before
        the first credentials there is nothing to say: the process does not start without them."""
        if self.lease is None:
            return
        token = self.session.token
        try:
            write_public(self.state_dir / STATUS_FILE, json.dumps(status_document(
                self.lease, token.expires_at if token else None, self.generation, self.failing, self.errors_total,
                self.last_error, time.time())))
        except OSError as exc:  # a status file is not worth stopping the keeping for
            log.warning("lease status not written", extra={"reason": repr(exc)[:200]})

    # --- leaving an old lease -------------------------------------------------------------
    def _drain(self, now: float) -> None:
        for old in list(self.draining):
            if now >= old.expires_at:  # Vault ends it (and its sessions) itself
                self.draining.remove(old)
                continue
            if now < old.next_check:
                continue
            try:
                left = asyncio.run(self._sessions_of(old.username))
            except Exception as exc:  # noqa: BLE001 - a node away: look again, else it expires
                log.info("cannot count the old user's sessions yet", extra={"reason": repr(exc)[:200]})
                left = None
            if left is None or left > 0:
                old.next_check = now + 1.0
                continue
            self.draining.remove(old)
            self._revoke(old)

    async def _sessions_of(self, username: str) -> int:
        """Sessions of ``username`` on every node, asked as the current user."""
        s, total = self.settings, 0
        for host, port in s.pg_nodes():
            conn = await asyncpg.connect(host=host, port=port, database=s.pg_database, user=self.lease.username,
                                         password=self.lease.password, timeout=s.pg_connect_timeout_seconds)
            try:
                total += await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", username)
            finally:
                await conn.close()
        return total

    def _revoke(self, old: Lease) -> None:
        if old.client is not self.session.client:  # a replaced token: its leases go with it
            self.session.revoke(old.client)
            log.info("old token revoked after the pools left its user", extra={"username": old.username})
            return
        try:
            self.session.client.sys.revoke_lease(lease_id=old.lease_id)
            log.info("old lease revoked after the pools left its user", extra={"username": old.username})
        except hvac.exceptions.Forbidden:
            if not self._lease_revoke_refused:
                log.info("the service's policy may not revoke leases: the old users end at their expiry",
                         extra={"username": old.username})
            self._lease_revoke_refused = True
        except (*UNAVAILABLE, *REFUSED) as exc:
            log.info("old lease not revoked; it ends at its expiry", extra={"reason": reason(exc)})

    # --- the service's KV secrets ---------------------------------------------------------
    def _refresh_kv(self) -> None:
        """Each secret under the service's KV path to <state dir>/secrets/<name> (0600), when it
        changed; read by the process's secret source before the secret files."""
        s, now = self.settings, time.time()
        kv = self.session.client.secrets.kv.v2
        try:
            names = kv.list_secrets(path=s.vault_kv_path, mount_point=s.vault_kv_mount)["data"]["keys"]
            read = {name: kv.read_secret_version(path=f"{s.vault_kv_path}/{name}", mount_point=s.vault_kv_mount,
                                                 raise_on_deleted_version=True)["data"]
                    for name in names if not name.endswith("/")}
            values = {name: doc["data"]["value"] for name, doc in read.items()}
            versions = {name: int(doc["metadata"]["version"]) for name, doc in read.items()}
        except (*UNAVAILABLE, *REFUSED, KeyError) as exc:
            self._kv_next = now + min(5.0, s.vault_kv_poll_seconds)
            self._failed("kv", exc, min(5.0, s.vault_kv_poll_seconds))
            return
        directory = self.state_dir / KV_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        changed = [name for name, value in values.items()
                   if not (directory / name).exists() or (directory / name).read_text() != value]
        for name in changed:
            write_private(directory / name, values[name])
        if changed and self._kv_versions:  # not the first read: a rotation reached this process
            log.info("secrets from Vault changed", extra={"secrets": sorted(changed)})
        if versions != self._kv_versions and s.vault_report_file:
            # Versions only, readable by whoever reads the hand-off directory (the deploy).
            report = Path(s.vault_report_file)
            tmp = report.with_name(f".{report.name}.tmp")
            tmp.write_text(json.dumps({"kv": versions, "at": now}, sort_keys=True))
            os.replace(tmp, report)
        self._kv_versions = versions
        self._kv_next = now + s.vault_kv_poll_seconds
        self._succeeded()


class PoolCredentials:
    """A process's pools on the credentials the keeper writes (``CredentialKeeper``)."""

    def __init__(self, state_dir: str | Path, poll_seconds: float):
        self.state_dir, self.poll_seconds = Path(state_dir), poll_seconds
        self.current = read_credentials(self.state_dir)
        self._seen = self._stamp()
        self._pools: list[tuple[asyncpg.Pool, dict]] = []

    def _stamp(self):
        st = (self.state_dir / CREDENTIALS_FILE).stat()
        return st.st_mtime_ns, st.st_ino, st.st_size

    def connect_args(self, args: dict) -> dict:
        return {**args, "user": self.current.username, "password": self.current.password}

    def add(self, pool: asyncpg.Pool, connect_args: dict) -> None:
        """``connect_args``: the pool's ``store.connect_args`` (user and password replaced here)."""
        self._pools.append((pool, connect_args))

    def problem(self) -> str | None:
        return self.current.problem()

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                stamp = self._stamp()
                if stamp == self._seen:
                    continue
                creds = read_credentials(self.state_dir)
                self._seen = stamp
            except (OSError, ValueError, KeyError) as exc:
                log.warning("credentials file not readable; keeping the current ones", extra={"reason": repr(exc)})
                continue
            changed = creds.generation != self.current.generation
            self.current = creds
            if changed:
                await self.switch()

    async def switch(self) -> None:
        for pool, args in self._pools:
            pool.set_connect_args(**self.connect_args(args))
            await pool.expire_connections()
        log.info("PostgreSQL pools moving to new credentials", extra={"username": self.current.username,
                                                                     "pools": len(self._pools)})


async def create_pool(settings: ProcessSettings, secrets, credentials: PoolCredentials | None,
                      target: str = "read-write") -> asyncpg.Pool:
    """A pool as the settings say: with ``credentials`` (Vault) on its user and following it,
    else as ``pg_user`` with the secret file ``postgres_password``."""
    s = settings
    user, password = ((credentials.current.username, credentials.current.password) if credentials
                      else (s.pg_user, secrets.get("postgres_password")))
    pool = await store.create_pool(s.pg_nodes(), s.pg_database, user, password, s.pg_pool_size, target=target,
                                   connect_timeout=s.pg_connect_timeout_seconds)
    if credentials:
        credentials.add(pool, store.connect_args(s.pg_nodes(), s.pg_database, user, password, target,
                                                 s.pg_connect_timeout_seconds))
    return pool
