"""Per-environment secrets, encrypted at rest with age under secrets/<env>/.

- ``secrets/<env>/<name>.age``: one secret each, encrypted to the recipients in
  ``secrets/<env>/recipients.txt`` (age public keys, one a line).
- The identity (private key) lives outside the repository:
  ``$SHIPYARD_AGE_IDENTITY_DIR/<env>.key`` (default ``~/.config/shipyard/age/<env>.key``).

Rotation (`make secrets-rotate ENV=.. NAME=..`): the new value replaces ``<name>.age`` and the
value it replaces is kept as ``<name>.previous.age`` until a deploy has applied the new one on
every host. While it is there, a host that still runs the previous value is this checkout's
own pending rotation, not another checkout's secrets: the next deploy (``make up``, or the rest
of an interrupted ``secrets-rotate``) applies it, then the previous file goes.

Missing secrets are generated only where the environment says so (``secrets.generate_missing``:
``local`` and ``ci``, per machine and throw-away) or on purpose (`make secrets-init`); a real
environment with a missing secret stops with that fix, so no deploy silently invents a new
password on whatever machine runs it. Values stay in memory: this module never writes plain
text to disk, and ``Secret`` prints as ``***``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets as random_source
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyrage

from shipyard.components import COMPONENTS
from shipyard.errors import SecretsError

IDENTITY_DIR_VAR = "SHIPYARD_AGE_IDENTITY_DIR"

# Every secret some component's service reads (shipyard.component.SecretFile.secret).
SECRET_NAMES = tuple(sorted({s.secret for comp in COMPONENTS for svc in comp.services for s in svc.secrets}))
_FORMATS = {name: fmt for comp in COMPONENTS for name, fmt in comp.secret_formats.items()}
# Secrets only the deploying machine holds (shipyard.component.Component.held_secrets).
HELD_NAMES = tuple(sorted({name for comp in COMPONENTS for name in comp.held_secrets}))
# Held secrets the user supplies (shipyard.component.Component.supplied_secrets).
SUPPLIED_NAMES = tuple(sorted({name for comp in COMPONENTS for name in comp.supplied_secrets}))
# Secrets a component issues from what it holds (shipyard.component.Component.issued_secrets).
_ISSUERS = {name: issue for comp in COMPONENTS for name, issue in comp.issued_secrets.items()}
# Secrets whose rotated value derives from the current one (shipyard.component.Component.successors).
_SUCCESSORS = {name: succeed for comp in COMPONENTS for name, succeed in comp.successors.items()}


def new_value(name: str) -> str:
    """A fresh random value for secret ``name``, in the format its component needs."""
    fmt = _FORMATS.get(name, "token")
    if fmt == "uuid":
        return str(uuid.UUID(bytes=random_source.token_bytes(16), version=4))
    if fmt == "base64-32":
        return base64.b64encode(random_source.token_bytes(32)).decode()
    return random_source.token_urlsafe(32)


def _fresh_value(repo: Path, env: str, name: str, environ: dict[str, str] | None) -> str:
    """A new value for ``name``: issued by its component, else random."""
    issue = _ISSUERS.get(name)
    return issue(repo, env, environ) if issue else new_value(name)


@dataclass(frozen=True)
class Secret:
    name: str
    value: str

    def __repr__(self) -> str:
        return f"Secret({self.name}=***)"

    __str__ = __repr__


def fingerprints(values: dict[str, Secret]) -> dict[str, str]:
    """name → a fingerprint of its value (sha256, salted with the name): what a host records of
    the secrets it runs with. The values are 32 random bytes, so a fingerprint reveals nothing."""
    return {name: hashlib.sha256(f"shipyard-secret:{name}:{secret.value}".encode()).hexdigest()[:16]
            for name, secret in sorted(values.items())}


def fingerprints_text(values: dict[str, Secret]) -> bytes:
    return "".join(f"{name} {fp}\n" for name, fp in fingerprints(values).items()).encode()


def parse_fingerprints(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if len(line.split()) == 2)


def differing(recorded: dict[str, str], values: dict[str, Secret],
              previous: dict[str, Secret] | None = None) -> list[str]:
    """The secrets whose value differs from what the host records (a secret the host never had
    does not count: adding one is a change the deploy makes, not a conflict; nor does a host
    still running the value this checkout's pending rotation replaces)."""
    mine, replaced = fingerprints(values), fingerprints(previous or {})
    return sorted(name for name, fp in recorded.items()
                  if name in mine and mine[name] != fp and replaced.get(name) != fp)


def identity_path(env: str, environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get(IDENTITY_DIR_VAR) or str(Path.home() / ".config" / "shipyard" / "age")
    return Path(base) / f"{env}.key"


def _write_private(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)  # atomic: a crash leaves the old file or the new, never half


def _load_identity(env: str, key_file: Path) -> pyrage.x25519.Identity:
    try:
        text = key_file.read_text()
    except FileNotFoundError:
        raise SecretsError(str(key_file), f"no age identity for environment {env!r}, but secrets/{env}/ holds encrypted secrets",
                           f"copy the environment's identity to {key_file} (or set {IDENTITY_DIR_VAR}); "
                           f"for a throw-away environment delete secrets/{env}/*.age and recipients.txt to generate new ones") from None
    lines = [ln for ln in text.splitlines() if ln.startswith("AGE-SECRET-KEY-")]
    if not lines:
        raise SecretsError(str(key_file), "holds no AGE-SECRET-KEY line", "restore the identity file from your backup")
    return pyrage.x25519.Identity.from_str(lines[0])


def _recipients(env: str, store: Path) -> list[pyrage.x25519.Recipient]:
    path = store / "recipients.txt"
    keys = [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith("age1")]
    if not keys:
        raise SecretsError(str(path), "no age recipients", f"add the public key of the {env} identity (age1...)")
    return [pyrage.x25519.Recipient.from_str(k) for k in keys]


PREVIOUS_SUFFIX = ".previous.age"


def rotate(repo: Path, env: str, name: str, environ: dict[str, str] | None = None) -> None:
    """Replace secret ``name`` of ``env`` with a new random value, keeping the old one as
    ``<name>.previous.age`` for the deploy that applies it (see the module doc)."""
    store = repo / "secrets" / env
    if name not in SECRET_NAMES:
        raise SecretsError(f"secrets/{env}/", f"no secret named {name!r}", f"NAME is one of: {', '.join(SECRET_NAMES)}")
    current, previous = store / f"{name}.age", store / f"{name}{PREVIOUS_SUFFIX}"
    if not current.exists():
        raise SecretsError(str(current), "missing, so there is nothing to rotate",
                           f"create it with `make secrets-init ENV={env}`")
    if previous.exists():
        raise SecretsError(str(previous), f"a rotation of {name} is pending: not every host has applied it yet",
                           f"finish it first with `make up ENV={env}` (or `make deploy ENV={env}`), then rotate again")
    key_file = identity_path(env, environ)
    identity = _load_identity(env, key_file)  # this checkout can decrypt what it rotates
    recipients = _recipients(env, store)
    succeed = _SUCCESSORS.get(name)
    fresh = (succeed(_decrypt(current, identity, key_file), time.time()) if succeed
             else _fresh_value(repo, env, name, environ))
    # The old value first: a crash between the two writes leaves previous == current, which a
    # deploy applies as a no-op rotation.
    _write_private(previous, current.read_bytes(), 0o644)
    _write_private(current, pyrage.encrypt(fresh.encode(), recipients), 0o644)


def reissue(repo: Path, env: str, name: str, reason_of, applied: str,
            environ: dict[str, str] | None = None) -> list[str]:
    """Rotate the issued secret ``name`` when ``reason_of(current value)`` gives a reason (a
    certificate whose names changed, or that nears expiry): the deploy that follows applies it.
    Lines to print (``applied``: what that deploy does with it), nothing secret."""
    if (repo / "secrets" / env / f"{name}{PREVIOUS_SUFFIX}").exists():
        return [f"{name}: a rotation is pending; this deploy applies it"]
    current = read_secret(repo, env, name, environ)
    if current is None:
        return []  # missing: the store issues it (or says how) before this runs
    reason = reason_of(current.value)
    if reason is None:
        return []
    rotate(repo, env, name, environ)
    return [f"{name}: re-issued ({reason}); {applied}"]


def previous_values(repo: Path, env: str, environ: dict[str, str] | None = None) -> dict[str, Secret]:
    """name → the value a pending rotation replaces ({} when none is pending)."""
    store = repo / "secrets" / env
    pending = [n for n in SECRET_NAMES if (store / f"{n}{PREVIOUS_SUFFIX}").exists()]
    if not pending:
        return {}
    key_file = identity_path(env, environ)
    identity = _load_identity(env, key_file)
    return {n: Secret(n, _decrypt(store / f"{n}{PREVIOUS_SUFFIX}", identity, key_file)) for n in pending}


def finish_rotations(repo: Path, env: str, names: list[str]) -> None:
    """After a deploy applied them on every host: the replaced values are no longer needed."""
    for name in names:
        (repo / "secrets" / env / f"{name}{PREVIOUS_SUFFIX}").unlink(missing_ok=True)


def _decrypt(path: Path, identity: pyrage.x25519.Identity, key_file: Path) -> str:
    try:
        return pyrage.decrypt(path.read_bytes(), [identity]).decode()
    except pyrage.DecryptError:
        raise SecretsError(str(path), f"cannot be decrypted with the identity at {key_file}",
                           "use the identity this environment was encrypted to (see recipients.txt)") from None


def _ensure_store(env: str, store: Path, key_file: Path, existing: list[Path]) -> None:
    """A new environment's store: its recipients (and this machine's identity, when it has none)."""
    if (store / "recipients.txt").exists():
        return
    if existing:
        raise SecretsError(str(store / "recipients.txt"), "missing while encrypted secrets exist",
                           "restore recipients.txt from git (it holds the public keys)")
    if not key_file.exists():
        identity = pyrage.x25519.Identity.generate()
        _write_private(key_file, f"# shipyard age identity for {env}\n{identity}\n".encode(), 0o600)
    identity = _load_identity(env, key_file)
    store.mkdir(parents=True, exist_ok=True)
    (store / "recipients.txt").write_text(f"{identity.to_public()}\n")


def load_or_create(repo: Path, env: str, environ: dict[str, str] | None = None,
                   generate_missing: bool = True, created: list[str] | None = None) -> dict[str, Secret]:
    """Decrypt every secret of ``env``; generate what is missing when ``generate_missing``
    (its names are appended to ``created``), else raise SecretsError naming them and the fix."""
    store = repo / "secrets" / env
    key_file = identity_path(env, environ)
    existing = [store / f"{n}.age" for n in SECRET_NAMES if (store / f"{n}.age").exists()]
    missing = [n for n in SECRET_NAMES if not (store / f"{n}.age").exists()]
    if missing and not generate_missing:
        raise SecretsError(f"secrets/{env}/", f"missing {', '.join(missing)}",
                           f"create them on purpose with `make secrets-init ENV={env}` (needs the identity of {env}), "
                           f"then commit secrets/{env}/; or restore them from git if they were deleted")
    _ensure_store(env, store, key_file, existing)
    identity = _load_identity(env, key_file)
    recipients = _recipients(env, store)
    values: dict[str, Secret] = {}
    for name in SECRET_NAMES:
        path = store / f"{name}.age"
        if path.exists():
            value = _decrypt(path, identity, key_file)
        else:
            value = _fresh_value(repo, env, name, environ)
            _write_private(path, pyrage.encrypt(value.encode(), recipients), 0o644)
            if created is not None:
                created.append(name)
        values[name] = Secret(name, value)
    return values


def _held_path(repo: Path, env: str, name: str) -> Path:
    if name not in HELD_NAMES:
        raise SecretsError(f"secrets/{env}/", f"no held secret named {name!r}", f"one of: {', '.join(HELD_NAMES)}")
    return repo / "secrets" / env / f"{name}.age"


def read_held(repo: Path, env: str, name: str, environ: dict[str, str] | None = None) -> Secret | None:
    """A held secret's value (None when it was never written)."""
    path = _held_path(repo, env, name)
    if not path.exists():
        return None
    key_file = identity_path(env, environ)
    return Secret(name, _decrypt(path, _load_identity(env, key_file), key_file))


def write_held(repo: Path, env: str, name: str, value: str, environ: dict[str, str] | None = None) -> None:
    """Encrypt a held secret to the environment's recipients (an existing one is never replaced:
    what only this machine holds is not overwritten by mistake)."""
    path = _held_path(repo, env, name)
    if path.exists():
        raise SecretsError(str(path), "exists already", "it is never overwritten: move it away on purpose first")
    store = repo / "secrets" / env
    if not (store / "recipients.txt").exists():
        raise SecretsError(str(store / "recipients.txt"), "missing: the environment has no secret store yet",
                           f"create it with `make secrets-init ENV={env}`")
    _write_private(path, pyrage.encrypt(value.encode(), _recipients(env, store)), 0o644)


def remove_held(repo: Path, env: str, name: str) -> bool:
    """Delete a held secret that no longer serves (Vault's initial root token, once revoked);
    False when it was not there."""
    path = _held_path(repo, env, name)
    if not path.exists():
        return False
    path.unlink()
    return True


def read_secret(repo: Path, env: str, name: str, environ: dict[str, str] | None = None) -> Secret | None:
    """One delivered secret's current value (None when it was never written)."""
    if name not in SECRET_NAMES:
        raise SecretsError(f"secrets/{env}/", f"no secret named {name!r}", f"one of: {', '.join(SECRET_NAMES)}")
    path = repo / "secrets" / env / f"{name}.age"
    if not path.exists():
        return None
    key_file = identity_path(env, environ)
    return Secret(name, _decrypt(path, _load_identity(env, key_file), key_file))


def put(repo: Path, env: str, name: str, value: str, environ: dict[str, str] | None = None) -> bool:
    """Encrypt a value the user supplies (``SUPPLIED_NAMES``: their certificate's key) to the
    environment's recipients, replacing the one before; True when it replaced one. The deploy that
    follows delivers what derives from it (the component's preflight notices the change)."""
    if name not in SUPPLIED_NAMES:
        raise SecretsError(f"secrets/{env}/", f"{name!r} is not a secret you supply",
                           f"NAME is one of: {', '.join(SUPPLIED_NAMES)}; the others are generated or issued "
                           f"(`make secrets-init`, `make secrets-rotate`)")
    if not value.strip():
        raise SecretsError(name, "the value is empty", "give the file that holds it (FILE=/path/to/privkey.pem)")
    store = repo / "secrets" / env
    # A new environment whose first secret is this one (mode 'files' from the start): its store
    # begins here, as secrets-init would begin it.
    _ensure_store(env, store, identity_path(env, environ), sorted(store.glob("*.age")) if store.is_dir() else [])
    path = store / f"{name}.age"
    existed = path.exists()
    _write_private(path, pyrage.encrypt(value.encode(), _recipients(env, store)), 0o644)
    return existed
