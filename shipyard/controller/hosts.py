"""The controller's access to an environment's hosts: the Docker engine through the docker SDK
(local socket, or a tunnel over SSH for SSH hosts: shipyard.controller.ssh) and the deployed project's files. Two faces:

- ``HostView``, read-only: what the operator's views (`make status`, `make plan`,
  `make logs`), the verify checks and the components' ``describe`` hooks use. It lists and
  reads; it never stops, starts, removes, signals or creates a container.
- ``HostControl``, the changing face (a ``HostView`` plus the changes): what releases and drills
  use, every change through one of its named methods so a reader finds them here.

The deploy itself does not come through here: it is pyinfra's (shipyard/apply/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from shipyard import commands, image_plan, bluegreen
from shipyard.errors import ShipyardError
from shipyard.bluegreen import ReleaseState
from shipyard.controller.ssh import engine_tunnel, shared
from shipyard.settings import EnvironmentSettings, HostSettings

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"


@dataclass
class HostView:
    settings: EnvironmentSettings
    host: HostSettings
    timeout_s: int = 30  # per Docker API request; drills that wait inside an exec pass more

    @property
    def local(self) -> bool:
        return self.host.connect == "@local"

    @property
    def project_dir(self) -> str:
        return commands.project_dir(self.settings.deploy_root, self.settings.name)

    def ssh_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run on the host by the ssh client, with the inventory's user, port, key and
        known hosts (shipyard.commands.ssh), quoted once for the remote shell. Read-only uses
        (files, compose's view), and the audit trail's append (shipyard.controller.audit_log)."""
        return shared(commands.ssh(self.host, argv))

    @cached_property
    def docker(self) -> docker.DockerClient:
        # The SDK (0.1-0.2 s to import) only once an engine is asked: a deploy's audit event
        # goes over SSH and needs none of it.
        import docker
        import docker.errors

        from shipyard.controller import tunnel_client

        try:
            if self.local:
                return docker.from_env(timeout=self.timeout_s)
            # Through SSH: exec output read so that none is lost (tunnel_client's module doc).
            return tunnel_client.client(f"unix://{engine_tunnel(self.host)}", self.timeout_s)
        except (docker.errors.DockerException, ShipyardError) as exc:
            reason = exc.what if isinstance(exc, ShipyardError) else str(exc)
            raise ShipyardError(f"host {self.host.name} ({self.host.connect})", f"cannot reach its Docker engine: {reason}",
                                f"check that the environment is deployed (make up ENV={self.settings.name}) "
                                "and that this machine can reach the host") from None

    def containers(self) -> list[Container]:
        """Every container of the environment's compose project on this host, stopped ones too."""
        # The SDK inspects each container it lists: one removed in between is left out, not an error.
        return self.docker.containers.list(
            all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={self.settings.compose_project}"},
            ignore_removed=True)

    def container_of(self, service: str, running: bool = True) -> Container:
        # The engine filters by the service's label: the SDK inspects each container it lists.
        found = [c for c in self.containers_of(service) if not running or c.status == "running"]
        if not found:
            raise ShipyardError(f"environment {self.settings.name}, host {self.host.name}, service {service}",
                                "no running container" if running else "no container",
                                f"roll the environment out first: make up ENV={self.settings.name}")
        return found[0]

    def containers_of(self, service: str) -> list[Container]:
        """The containers of one compose service (stopped ones too), filtered by the engine: the
        SDK inspects every container it lists, and a rollback is timed."""
        return self.docker.containers.list(all=True, ignore_removed=True, filters={"label": [
            f"{COMPOSE_PROJECT_LABEL}={self.settings.compose_project}", f"{COMPOSE_SERVICE_LABEL}={service}"]})

    def image_id(self, ref: str) -> str | None:
        """The id of image ``ref`` on the host, None when it is not there."""
        import docker.errors

        try:
            return self.docker.images.get(ref).id
        except docker.errors.ImageNotFound:
            return None

    def release_state(self) -> tuple[ReleaseState, bool]:
        """(the host's release state, whether a release recorded it); shipyard.bluegreen."""
        raw = self.read_path(f"{bluegreen.release_dir(self.settings.deploy_root, self.settings.name)}/{bluegreen.STATE_FILE}")
        return ReleaseState.of_host(raw.decode() if raw else None, f"host {self.host.name}: release state",
                                    image_plan.first_version(self.settings) or "")

    def compose_config_hashes(self) -> str | None:
        """`docker compose config --hash '*'` of the deployed project (read-only); None when it
        cannot be asked (nothing deployed, no access)."""
        argv = commands.compose_config_hashes(self.project_dir, self.settings.compose_project)
        result = subprocess.run(argv if self.local else self.ssh_argv(argv), capture_output=True, text=True,
                                timeout=60, check=False)
        return result.stdout if result.returncode == 0 else None

    def read_file(self, rel: str) -> bytes | None:
        """A file of the deployed project (None when it is not there)."""
        return self.read_path(f"{self.project_dir}/{rel}")

    def file_digests(self, rels: list[str]) -> dict[str, str]:
        """sha256 (hex) of each of the deployed project's files ``rels`` that is there — over SSH
        in one round trip, not one per file."""
        if self.local:
            return {rel: hashlib.sha256(content).hexdigest() for rel in rels if (content := self.read_file(rel)) is not None}
        result = subprocess.run(self.ssh_argv(commands.sha256_of_files(self.project_dir, rels)), capture_output=True,
                                text=True, timeout=60, check=False)
        return {rel: digest for digest, rel in (line.split(None, 1) for line in result.stdout.splitlines() if line)}

    def read_path(self, path: str) -> bytes | None:
        """A file of the host (None when it is not there)."""
        if self.local:
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
        result = subprocess.run(self.ssh_argv(["cat", path]), capture_output=True, timeout=30, check=False)
        return result.stdout if result.returncode == 0 else None


def one_per_machine(hosts) -> list[HostSettings]:
    """The hosts with one of each way of reaching them: two ``@local`` hosts are one machine, and
    a file written for both is one file."""
    seen, result = set(), []
    for host in hosts:
        target = (host.connect, host.ssh_user, host.ssh_port)
        if target not in seen:
            seen.add(target)
            result.append(host)
    return result


# A file replaced whole over SSH, its content on stdin (never on a command line): written beside
# it, then renamed over it, so a reader (nginx, a deploy) never sees half of it.
_REPLACE = 'umask 022 && mkdir -p "$1" && cat > "$2.shipyard-new" && mv -f "$2.shipyard-new" "$2"'
# Appended: the mode set after the write (a log of operators' actions is not for every user).
_APPEND = 'umask 022 && mkdir -p "$1" && cat >> "$2" && chmod "$3" "$2"'


@dataclass
class HostControl(HostView):
    """The changing face: a ``HostView`` that also stops, starts, signals, removes and runs
    containers, runs commands in them, and writes the release's files. Releases and drills only."""

    def replace_file(self, path: str, content: bytes) -> None:
        """A file of the host replaced whole (its directory made when missing)."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.shipyard-new"
            with open(tmp, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)
            return
        self._ssh_write(_REPLACE, path, content)

    def append_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """``content`` added at the end of a file of the host (made when missing), in one write:
        a line lands whole after whatever another writer appended (O_APPEND)."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
            try:
                os.fchmod(fd, mode)
                os.write(fd, content)
            finally:
                os.close(fd)
            return
        self._ssh_write(_APPEND, path, content, f"{mode:o}")

    def _ssh_write(self, script: str, path: str, content: bytes, *more: str) -> None:
        argv = self.ssh_argv(["sh", "-c", script, "sh", os.path.dirname(path), path, *more])
        try:
            result = subprocess.run(argv, input=content, capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode != 0:
            why = result.stderr.decode(errors="replace").strip() if result is not None else "no answer in 30 s"
            raise ShipyardError(f"host {self.host.name} ({self.host.connect})", f"cannot write {path}: {why}",
                                f"check that the host answers over SSH (make status ENV={self.settings.name}) "
                                "and that its SSH user may write there")

    def stop(self, container: Container) -> None:
        container.stop()  # the engine waits the service's stop_grace_period (compose's StopTimeout)

    def start(self, container: Container) -> None:
        container.start()

    def remove(self, container: Container) -> None:
        container.remove(force=True)

    def signal(self, container: Container, signal: str) -> None:
        container.kill(signal=signal if signal.startswith("SIG") else f"SIG{signal}")

    def run(self, container: Container, argv: list[str], user: str = "") -> tuple[int, str, str]:
        """``argv`` in a running container, no shell: (exit code, stdout, stderr)."""
        return exec_in(container, argv, user=user)

    def run_beside(self, stopped: Container, argv: list[str], user: str = "", environment: dict[str, str] | None = None,
                   timeout_s: float | None = None) -> tuple[int, str, str]:
        """``argv`` in a throwaway container of ``stopped``'s image with its volumes (and config
        mounts), removed afterwards: (exit code, stdout, stderr)."""
        throwaway = self.docker.containers.run(stopped.attrs["Config"]["Image"], argv[1:], entrypoint=argv[:1],
                                               user=user, environment=environment or {}, volumes_from=[stopped.id],
                                               detach=True, labels={"org.shipyard.drill": stopped.name})
        try:
            code = throwaway.wait(timeout=timeout_s or self.timeout_s)["StatusCode"]
            out = throwaway.logs(stdout=True, stderr=False).decode(errors="replace")
            err = throwaway.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            throwaway.remove(force=True)
        return code, out, err


def exec_in(container: Container, argv: list[str], user: str = "") -> tuple[int, str, str]:
    """Run ``argv`` in a container, no shell: (exit code, stdout, stderr)."""
    result = container.exec_run(argv, user=user, demux=True)
    out, err = result.output or (None, None)
    return result.exit_code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")


def uptime(container: Container, now: dt.datetime | None = None) -> str:
    """How long it has run: ``40s``, ``5m02s``, ``2h13m``, ``3d04h``; ``-`` when it does not run."""
    started = container.attrs["State"].get("StartedAt", "")
    if container.status != "running" or not started or started.startswith("0001"):
        return "-"
    # Docker prints nanoseconds; Python parses microseconds.
    stamp = started.rstrip("Z")
    stamp = stamp[:26] if "." in stamp else stamp
    since = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.timezone.utc)
    seconds = max(0, int(((now or dt.datetime.now(dt.timezone.utc)) - since).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def health(container: Container) -> str:
    state = container.attrs["State"]
    if state["Status"] != "running":
        return f"{state['Status']} (exit {state.get('ExitCode')})"
    return (state.get("Health") or {}).get("Status", "running")
