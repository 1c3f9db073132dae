"""pyinfra operation: a Docker engine and Compose v2 on the host, running.

One fact reads everything at once (a no-op deploy must stay cheap); the operation then
installs only what is missing, in the host's own way:

- engine: Debian/Ubuntu ``docker.io`` (Debian 12 ships 20.10, which Compose v2 drives fine), with
  ``pigz`` (the engine's faster decompressor of pulled layers);
- Compose v2: the distro's package where it has one (Debian >= 13 ``docker-compose``, Ubuntu
  ``docker-compose-v2``); on Debian 12, whose ``docker-compose`` is the old v1, trixie's
  ``docker-compose`` .deb (it needs only libc6 >= 2.34) fetched through a *temporary*, private
  apt state pointed at the mirror the host already uses — the host's own sources are untouched;
- running: ``systemctl enable --now docker`` under systemd; with no init system (containers,
  CI machines like ours) ``dockerd`` is started detached and waited for.
"""

from __future__ import annotations

import io
from importlib import resources

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from shipyard.commands import to_shell

_APT_ENV = "DEBIAN_FRONTEND=noninteractive"
_ENGINE_WAIT_S = 60


class DockerEngineState(FactBase):
    """key=value lines: dockerd path, compose version, server version, init system, OS."""

    # Read at every deploy, on every host: the compose plugin run directly (where the docker CLI
    # looks for it, in its order) rather than `docker compose version`, which also starts the CLI
    # and has every plugin print its metadata (~130 ms against ~30 ms on the test hosts); the
    # server's version from `docker version`, not `docker info`'s whole report (~80 ms).
    PLUGIN_DIRS = ("$HOME/.docker/cli-plugins", "/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
                   "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")

    def command(self) -> str:
        dirs = " ".join(f'"{d}"' for d in self.PLUGIN_DIRS)
        return (
            "printf 'dockerd=%s\\n' \"$(command -v dockerd || true)\"; "
            f"compose=; for p in {dirs}; do if [ -x \"$p/docker-compose\" ]; then "
            "compose=$(\"$p/docker-compose\" version --short 2>/dev/null); break; fi; done; "
            "printf 'compose=%s\\n' \"$compose\"; "
            "printf 'server=%s\\n' \"$(docker version --format '{{.Server.Version}}' 2>/dev/null || true)\"; "
            "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
            "printf 'debootstrap=%s\\n' \"$(command -v debootstrap || true)\"; "
            "( . /etc/os-release 2>/dev/null; printf 'os=%s\\ncodename=%s\\n' \"$ID\" \"$VERSION_CODENAME\" )"
        )

    def process(self, output):
        state = {}
        for line in output:
            key, _, value = line.partition("=")
            state[key.strip()] = value.strip()
        return state


def compose_package(os_id: str, codename: str) -> str | None:
    """The distro package that provides Compose v2, or None where it must come from elsewhere."""
    if os_id == "ubuntu":
        return "docker-compose-v2"
    if os_id == "debian" and codename not in ("bookworm", "bullseye", "buster"):
        return "docker-compose"
    return None


def _apt_install(packages: list[str]) -> StringCommand:
    install = to_shell(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages])
    return StringCommand(f"apt-get update -qq && {_APT_ENV} {install}")


# host name → the engine's state as the guards before it read it (shipyard.apply.guard): used once.
_REMEMBERED: dict[str, dict[str, str]] = {}


def remember_state(host_name: str, state: dict[str, str]) -> None:
    _REMEMBERED[host_name] = state


@operation()
def docker_engine(debootstrap: bool = False):
    """Docker engine + Compose v2 installed and the daemon answering (``debootstrap`` for local images)."""
    state = _REMEMBERED.pop(host.name, None) or host.get_fact(DockerEngineState)
    missing = []
    if not state.get("dockerd"):
        # With pigz the engine decompresses a pulled layer with unpigz instead of Go's gzip: a
        # 430 MB image pulled alone in 5.1-5.9 s against 6.5-7.5 s on a test host (no gain seen
        # when three hosts pull at once on two busy cores). Installed with the engine only: a
        # host that has an engine already may have no package mirror (the registry's hosts need
        # none), so it is never asked for alone.
        missing += ["docker.io", "pigz"]
    if debootstrap and not state.get("debootstrap"):
        missing.append("debootstrap")
    compose_pkg = compose_package(state.get("os", ""), state.get("codename", ""))
    needs_compose = not state.get("compose", "").startswith("2")
    if needs_compose and compose_pkg:
        missing.append(compose_pkg)
    if missing:
        yield _apt_install(missing)
    if needs_compose and not compose_pkg:
        script = resources.files("shipyard.apply").joinpath("apt-from-suite.sh").read_bytes()
        # Into root's own directory, not a fixed /tmp path another user could have planted.
        yield StringCommand("install", "-d", "-m", "700", "/root/.cache/shipyard")
        yield FileUploadCommand(io.BytesIO(script), "/root/.cache/shipyard/apt-from-suite.sh")
        yield StringCommand("sh", "/root/.cache/shipyard/apt-from-suite.sh", "trixie", "docker-compose", "install")
        yield StringCommand("docker", "compose", "version")
    if not state.get("server"):
        if state.get("systemd") == "yes":
            yield StringCommand("systemctl", "enable", "--now", "docker")
        else:
            # No init system: start the daemon detached from this session and wait until it answers.
            yield StringCommand("setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &")
        yield StringCommand(
            f"for i in $(seq {_ENGINE_WAIT_S * 2}); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; "
            f"echo 'dockerd did not answer within {_ENGINE_WAIT_S}s; last lines of /var/log/dockerd.log:' >&2; "
            "tail -n 20 /var/log/dockerd.log >&2; exit 1"
        )
    if not missing and not needs_compose and state.get("server"):
        host.noop(f"docker {state['server']} with compose {state['compose']} is running")


def ensure_docker_engine(debootstrap: bool = False) -> None:
    docker_engine(name="docker engine and compose v2", debootstrap=debootstrap)
