"""argv builders for docker compose and docker. Data only: nothing here runs anything.

Every command is a list of arguments; the apply layer quotes it once at the boundary
(``shlex.join``), so a value like ``x; rm -rf /`` stays one literal argument.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def project_dir(deploy_root: str, env: str) -> str:
    return f"{deploy_root.rstrip('/')}/{env}"


def last_good_dir(deploy_root: str, env: str) -> str:
    """A copy of the project as the last deploy that finished well left it (root-only like it)."""
    return f"{deploy_root.rstrip('/')}/.{env}.last-good"


def handoff_root(deploy_root: str, env: str) -> str:
    """What the live setups hand the instances (Component.live_setup): outside the project,
    which the deploy keeps exactly as rendered."""
    return f"{deploy_root.rstrip('/')}/.{env}.handoff"


def handoff_dir(deploy_root: str, env: str, component: str, instance: str) -> str:
    """What a component's live setup hands one instance, mounted read-write in its container."""
    return f"{handoff_root(deploy_root, env)}/{component}/{instance}"


def compose(project_directory: str, project: str, *args: str) -> list[str]:
    return ["docker", "compose", "--project-directory", project_directory,
            "-f", f"{project_directory}/compose.yaml", "-p", project, *args]


def compose_up_wait(project_directory: str, project: str, services: Sequence[str], timeout_s: int) -> list[str]:
    return compose(project_directory, project, "up", "-d", "--wait", "--wait-timeout", str(timeout_s),
                   "--remove-orphans", *services)


def compose_config_hashes(project_directory: str, project: str) -> list[str]:
    return compose(project_directory, project, "config", "--hash", "*")


def compose_ps(project_directory: str, project: str) -> list[str]:
    return compose(project_directory, project, "ps", "-a", "--format", "json")


def engine_version() -> list[str]:
    """The engine's version; exits 1 with the client's reason on stderr when the engine does not
    answer (a stopped dockerd: "Cannot connect to the Docker daemon at ...")."""
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def compose_down(project_directory: str, project: str, volumes: bool) -> list[str]:
    return compose(project_directory, project, "down", "--remove-orphans", *(["--volumes"] if volumes else []))


def project_volumes(project: str) -> list[str]:
    """Every volume compose made for ``project``, also those its current file no longer names."""
    return ["docker", "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={project}"]


def project_containers(project: str) -> list[str]:
    """Every container of ``project``, running or not (ids)."""
    return ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]


# What a converge reads of a container, one compact JSON object a line: the whole inspect is
# ~30 KB of indented JSON a container (~5,000 lines a host in `multi`), which pyinfra's SSH
# connector reads line by line on the deploying machine.
INSPECTED = ('{"Name":{{json .Name}},"Image":{{json .Image}},"Status":{{json .State.Status}},'
             '"ExitCode":{{json .State.ExitCode}},'
             '"Health":{{if .State.Health}}{{json .State.Health.Status}}{{else}}null{{end}},'
             '"Labels":{{json .Config.Labels}}}')


def inspect_project_containers(project: str) -> list[str]:
    """Every container of ``project`` that compose's ``ps -a`` lists (its services' containers,
    not ``run``'s one-offs), inspected in one command (``INSPECTED``: a line each; none when there
    is none, and one removed between the list and the inspect is left out). One command where
    ``compose ps`` and an inspect of its ids were two (a compose CLI start-up and a round trip)."""
    script = ('ids=$(docker ps -aq --filter "label=com.docker.compose.project=$1" '
              '--filter label=com.docker.compose.oneoff=False) && '
              'if [ -n "$ids" ]; then docker inspect --format "$2" $ids || true; fi')
    return ["sh", "-c", script, "sh", project, INSPECTED]


def cat_if_present(path: str) -> tuple[str, ...]:
    """``path``'s content, nothing when it does not exist (exit 0 either way)."""
    return ("sh", "-c", 'cat "$1" 2>/dev/null || true', "sh", path)


def project_networks(project: str) -> list[str]:
    """The networks compose made for ``project`` (names)."""
    return ["docker", "network", "ls", "--format", "{{.Name}}", "--filter", f"label=com.docker.compose.project={project}"]


def docker_network_inspect(name: str) -> list[str]:
    return ["docker", "network", "inspect", name]


def volume_rm(names: Sequence[str]) -> list[str]:
    return ["docker", "volume", "rm", *names]


def compose_kill_signal(project_directory: str, project: str, service: str, signal: str) -> list[str]:
    return compose(project_directory, project, "kill", "-s", signal, service)


def docker_inspect(ids: Sequence[str]) -> list[str]:
    return ["docker", "inspect", *ids]


def docker_image_ids(refs: Sequence[str]) -> list[str]:
    """One line per image found: its tags as JSON, then its id (missing refs are skipped)."""
    return ["docker", "image", "inspect", "--format", "{{json .RepoTags}} {{.Id}}", *refs]


_PART = "@@shipyard-part"
_ERR = "@@shipyard-stderr"


def parallel(argvs: Sequence[Sequence[str]]) -> str:
    """One shell command running every argv at once; ``split_parallel`` recovers each one's
    exit code and stdout. State reads of a rollout are independent and each costs a docker
    CLI start-up (~0.25 s): run together they cost one."""
    jobs = " ".join(f'( {to_shell(argv)} >"$d/{i}" 2>"$d/{i}.err"; echo $? >"$d/{i}.rc" ) &'
                    for i, argv in enumerate(argvs))
    show = "; ".join(f'printf \'\\n{_PART} {i} %s\\n\' "$(cat "$d/{i}.rc")"; cat "$d/{i}"; '
                     f'printf \'\\n{_ERR}\\n\'; cat "$d/{i}.err"'
                     for i in range(len(argvs)))
    return f'd=$(mktemp -d); {jobs} wait; {show}; rm -rf "$d"'


def split_parallel(output: str, count: int) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each job of ``parallel``, in order."""
    parts: list[tuple[int, str, str]] = [(-1, "", "")] * count
    for chunk in output.split(f"\n{_PART} ")[1:]:
        header, _, body = chunk.partition("\n")
        index, code = header.split()
        # The last job's marker may end the output: a transport that strips the final newline.
        stdout, _, stderr = body.partition(f"\n{_ERR}")
        parts[int(index)] = (int(code), stdout, stderr.removeprefix("\n"))
    return parts


def compose_up_detached(project_directory: str, project: str, services: Sequence[str]) -> list[str]:
    # Not --no-deps: compose hashes a service's config without its depends_on then, and the
    # next deploy would take the container for changed.
    return compose(project_directory, project, "up", "-d", *services)


def docker_wait(container: str, timeout_s: int) -> list[str]:
    """Until the container stops; prints its exit code (``timeout`` ends a wait that would not)."""
    return ["timeout", str(timeout_s), "docker", "wait", container]


def docker_logs_tail(container: str, lines: int) -> list[str]:
    return ["docker", "logs", "--tail", str(lines), container]


def to_shell(argv: Sequence[str]) -> str:
    """The single place where an argv becomes a shell string: every argument quoted."""
    return shlex.join(argv)


# The remote engine's socket (dockerd's default; /var/run is /run on Debian).
DOCKER_SOCKET = "/var/run/docker.sock"
SSH_CONNECT_TIMEOUT_S = 10


def ssh_options(host) -> list[str]:
    """The ssh client's options for a host of the inventory (shipyard.settings.HostSettings):
    never a prompt (nothing waits on a person), a bounded connect, and the inventory's key and
    known hosts when it names them — checked strictly then, as pyinfra does with the same data."""
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
    if host.ssh_port:
        options += ["-p", str(host.ssh_port)]
    if host.ssh_key:
        options += ["-i", host.ssh_key, "-o", "IdentitiesOnly=yes"]
    if host.ssh_known_hosts_file:
        options += ["-o", f"UserKnownHostsFile={host.ssh_known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
    return options


def ssh_destination(host) -> str:
    return f"{host.ssh_user}@{host.connect}" if host.ssh_user else host.connect


def as_root(host, argv: Sequence[str]) -> list[str]:
    """``argv`` as root on ``host``: itself for a root login, through passwordless sudo when the
    inventory sets ``_sudo`` (``-n``: an error, never a prompt; ``-H``: root's HOME, where the
    docker client keeps its logins)."""
    return ["sudo", "-n", "-H", "--", *argv] if getattr(host, "sudo", False) else list(argv)


def ssh(host, argv: Sequence[str]) -> list[str]:
    """``argv`` run as root on ``host`` over SSH, quoted once for its shell."""
    return ["ssh", *ssh_options(host), ssh_destination(host), to_shell(as_root(host, argv))]


def ssh_control_master(host, control_path: str) -> list[str]:
    """One authenticated SSH connection to ``host`` that later ssh runs share through
    ``control_path`` (no handshake each): runs until killed."""
    return ["ssh", *ssh_options(host), "-nNT", "-o", "ControlMaster=yes", "-o", f"ControlPath={control_path}",
            "-o", "ServerAliveInterval=15", ssh_destination(host)]


def ssh_engine_dial(host, control_path: str) -> list[str]:
    """One connection to the host's engine as root (``docker system dial-stdio``: the engine's
    socket on stdin/stdout, what the docker CLI's own ssh:// runs) over the shared connection of
    ``ssh_control_master``: how an SSH user that is not root, and may not open the socket,
    reaches the engine through sudo."""
    return ["ssh", *ssh_options(host), "-o", f"ControlPath={control_path}", ssh_destination(host),
            to_shell(as_root(host, ["docker", "system", "dial-stdio"]))]


def ssh_forward_docker(host, local_socket: str) -> list[str]:
    """A tunnel from ``local_socket`` on this machine to the host's engine socket: the docker SDK
    talks to it as to a local engine (its own ``ssh://`` would read only ~/.ssh/config, never the
    inventory's key or known hosts). Runs until killed; exits at once if the forward fails."""
    return ["ssh", *ssh_options(host), "-nNT", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
            "-L", f"{local_socket}:{DOCKER_SOCKET}", ssh_destination(host)]


def ssh_forward_port(host, local_port: int, target: str, target_port: int) -> list[str]:
    """A tunnel from 127.0.0.1:``local_port`` on this machine to ``target``:``target_port`` as
    ``host`` reaches it (the registry on its own address): runs until killed."""
    return ["ssh", *ssh_options(host), "-nNT", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
            "-L", f"127.0.0.1:{local_port}:{target}:{target_port}", ssh_destination(host)]


def docker_save(refs: Sequence[str]) -> list[str]:
    return ["docker", "save", *refs]


def docker_load() -> list[str]:
    """Images from a ``docker save`` stream on stdin."""
    return ["docker", "load", "--quiet"]


def docker_image_id(ref: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", ref]


def sha256_of_files(directory: str, rels: Sequence[str]) -> list[str]:
    """``<sha256>  <rel>`` for each of ``rels`` under ``directory`` that exists (the others, and a
    missing directory, print nothing): one command for a whole project's files."""
    return ["sh", "-c", 'cd "$1" 2>/dev/null || exit 0; shift; for f; do [ -f "$f" ] && sha256sum -- "$f"; done; exit 0',
            "sh", directory, *rels]
