"""A service's own Vault session (hvac, synchronous: run from the credential keeper's thread,
``db_credentials``): the AppRole login with the response-wrapped secret-id the deploy hands the
service, token renewal, and a new login when renewal is refused or the token nears its max TTL.

The secret-id. The deploy (the trusted orchestrator) writes a *wrapped* secret-id — a single-use
token that can be unwrapped once, within its wrap TTL — to the secret file
``vault_wrapped_secret_id``. ``take_secret_id`` unwraps it and deletes the file; when the file
cannot be deleted (a read-only mount) a marker holding its sha256 is written to the state dir,
so that a second unwrap is not even tried from this container. The unwrapped secret-id is kept
in memory only, never written: a later login of this process (after the token's max TTL, or a
refused renewal) uses it again, which works only when the AppRole's secret-ids allow more than
one use (``vault.approle.secret_id_num_uses``: 0 or > 1). A restarted process has neither: it
needs a fresh wrapped secret-id from the deploy, and says so (``VaultStartError``).

Nothing here logs or formats a secret value: not the wrapped token, the secret-id, the client
token, nor a password.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import requests

log = logging.getLogger("taskplatform.vault")

# Vault did not answer, or answered that it cannot serve now (sealed, standby without a
# leader, overloaded): try again later, keep what is held meanwhile.
UNAVAILABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, hvac.exceptions.VaultDown,
               hvac.exceptions.BadGateway, hvac.exceptions.InternalServerError,
               hvac.exceptions.RateLimitExceeded)
# Vault answered no: the token or lease is gone (revoked, expired), the secret-id spent.
REFUSED = (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath,
           hvac.exceptions.Unauthorized)


class VaultStartError(RuntimeError):
    """The process cannot log in at start: what, where, and what to do. Never holds a secret."""


def reason(exc: BaseException) -> str:
    """An exception as a log field: its class and hvac's message (Vault's error strings name no
    secret), without the request's URL parameters."""
    text = str(exc).split(", on ")[0]
    return f"{exc.__class__.__name__}: {text}"[:300]


@dataclass
class Token:
    accessor: str
    ttl_s: int  # what a renewal asks for: the role's token TTL
    expires_at: float  # time.time()
    renewed_at: float


class VaultSession:
    def __init__(self, address: str, ca_file: str, role_id: str, wrapped_file: Path, state_dir: Path,
                 timeout: float = 5.0, approle_mount: str = "approle"):
        self.address, self.ca_file, self.role_id = address, ca_file, role_id
        self.wrapped_file, self.state_dir, self.timeout = Path(wrapped_file), Path(state_dir), timeout
        self.approle_mount = approle_mount
        self.client = self._client()
        self.token: Token | None = None
        self._secret_id: str | None = None
        self.secret_id_spent = False  # a login refused it: no later login can use it

    def __repr__(self) -> str:
        return f"VaultSession({self.address}, role_id=***, token={'***' if self.token else None})"

    def _client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.address, verify=self.ca_file or True, token=token, timeout=self.timeout)

    # --- the secret-id ----------------------------------------------------------------------
    @property
    def _used_marker(self) -> Path:
        return self.state_dir / "wrapped-secret-id.used"

    def take_secret_id(self) -> None:
        """Unwrap the deploy's wrapped secret-id (once: it is single use) and remove the file."""
        try:
            wrapped = self.wrapped_file.read_text().strip()
        except OSError as exc:
            raise VaultStartError(f"{self.wrapped_file}: the wrapped secret-id is not readable ({exc.strerror}); "
                                  f"the deploy writes a fresh one before each start of the service") from None
        if not wrapped:
            raise VaultStartError(f"{self.wrapped_file} is empty: the deploy writes a fresh wrapped secret-id "
                                  f"before each start of the service")
        digest = hashlib.sha256(wrapped.encode()).hexdigest()
        if self._used_marker.exists() and self._used_marker.read_text().strip() == digest:
            raise VaultStartError(f"{self.wrapped_file}: this wrapped secret-id was unwrapped by an earlier start "
                                  f"of this container (it is single use); a restarted service needs a fresh one "
                                  f"from the deploy (make up)")
        try:
            self._secret_id = self._client(wrapped).sys.unwrap()["data"]["secret_id"]
        except UNAVAILABLE as exc:
            raise VaultStartError(f"Vault at {self.address} is unavailable ({reason(exc)}); the service starts "
                                  f"once it answers and is unsealed") from None
        except (hvac.exceptions.VaultError, KeyError, TypeError) as exc:
            raise VaultStartError(f"{self.wrapped_file}: Vault refused to unwrap the secret-id ({reason(exc)}): it "
                                  f"expired (its wrap TTL) or was unwrapped already. If this service did not "
                                  f"unwrap it, someone else did: treat it as intercepted (audit log), then "
                                  f"redeploy for a fresh one") from None
        try:
            self.wrapped_file.unlink()
        except OSError as exc:  # a read-only mount (docker secrets): remember it was used
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(self._used_marker, digest + "\n")
            log.info("wrapped secret-id used; its file could not be deleted, marked as used",
                     extra={"file": str(self.wrapped_file), "reason": exc.strerror})

    # --- the token --------------------------------------------------------------------------
    def login(self) -> None:
        """AppRole login with the secret-id held in memory; the client then carries the new token."""
        if self._secret_id is None:
            self.take_secret_id()
        client = self._client()
        try:
            auth = client.auth.approle.login(role_id=self.role_id, secret_id=self._secret_id,
                                             mount_point=self.approle_mount)["auth"]
        except REFUSED:
            self.secret_id_spent = True
            raise
        now = time.time()
        self.client = client
        self.token = Token(auth["accessor"], int(auth["lease_duration"]), now + auth["lease_duration"], now)
        log.info("logged in to Vault", extra={"ttl_s": auth["lease_duration"], "renewable": auth["renewable"]})

    def renew(self) -> int:
        """Renew the token by its TTL; the seconds granted (fewer than asked: its max TTL is near).
        Raises REFUSED when the token is gone (expired, revoked), UNAVAILABLE when Vault is."""
        auth = self.client.auth.token.renew_self(increment=self.token.ttl_s)["auth"]
        now = time.time()
        self.token.expires_at, self.token.renewed_at = now + auth["lease_duration"], now
        return int(auth["lease_duration"])

    def renew_due_at(self) -> float:
        """Half-way through what the last login or renewal granted."""
        return self.token.renewed_at + (self.token.expires_at - self.token.renewed_at) / 2

    def revoke(self, client: hvac.Client) -> None:
        """Revoke ``client``'s token (with it the leases it made): a replaced token, at shutdown."""
        try:
            client.auth.token.revoke_self()
        except (*UNAVAILABLE, *REFUSED) as exc:  # it expires at its TTL anyway
            log.info("token not revoked; it expires on its own", extra={"reason": reason(exc)})


def write_private(path: Path, text: str) -> None:
    """``text`` to ``path`` (0600) by rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)

