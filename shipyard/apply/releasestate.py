"""The host's release state (shipyard.bluegreen) as a deploy sees it, and what a deploy does
with it: the routing file the edge includes, and the idle colour removed once it is no longer
kept warm. A deploy never changes the state itself; releases and rollbacks do
(shipyard.controller.releases)."""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.exceptions import OperationError

from shipyard import commands, bluegreen
from shipyard.apply import converge, remote
from shipyard.apply.private_files import WantedPath
from shipyard.bluegreen import ReleaseState
from shipyard.errors import RolloutError


class ReleaseStateFile(FactBase):
    """The text of the host's state.json ("" when no release has touched the host)."""

    def command(self, path: str) -> str:
        return commands.to_shell(["cat", path]) + " 2>/dev/null || true"

    @staticmethod
    def default():
        return ""

    def process(self, output):
        return "\n".join(output)


def state_path(deploy_root: str, env: str) -> str:
    return bluegreen.state_file(deploy_root, env)


def host_release_state(deploy_root: str, env: str, first_version: str,
                       read: str | None = None) -> tuple[ReleaseState, bool]:
    """(the state, whether a release has recorded one): a host no release touched runs the
    settings' version in blue. ``read``: the file's text as `make up` read it just before
    pyinfra (with its SSH reachability check), else it is read here."""
    path = state_path(deploy_root, env)
    text = host.get_fact(ReleaseStateFile, path=path) if read is None else read
    return ReleaseState.of_host(text, f"host {host.name}: {path}", first_version)


def check_release_start(state: ReleaseState, starting: str, where: str) -> None:
    """A release's deploy (``starting``: the colour it starts) goes on only when the host's state
    says that release is starting it: the release writes the state before it deploys, so any
    other state means something else changed it meanwhile, and the deploy would run the wrong
    versions in the wrong colours."""
    if state.starting != starting:
        holds = f"{state.starting} starting" if state.starting else "no release starting"
        raise RolloutError(where, f"the release state does not start {starting} (it holds {holds}, "
                                  f"{state.live} live); nothing on the host was changed",
                           "run the release again (it writes the state first); if this repeats, find what else "
                           "writes this file (another checkout's release, a hand edit)")


def routing_paths(deploy_root: str, env: str, routing: bytes) -> tuple[str, list[WantedPath]]:
    """(root, wanted paths) of the routing file a routing service mounts."""
    top = bluegreen.release_dir(deploy_root, env)
    root = f"{top}/{bluegreen.ROUTING_DIR}"
    return root, [WantedPath(top, 0, "755"), WantedPath(root, 0, "755"),
                  WantedPath(f"{root}/{bluegreen.ROUTING_FILE}", 0, "644", routing)]


@operation()
def colour_removed(project_dir: str, project: str, services: list[str]):
    """Stop and remove the containers of an idle colour no longer kept warm (the services stay in
    the compose file: the next release starts them again)."""
    # What the rollout's read saw, when nothing changed the host since: no round trip.
    states = converge.seen_services(host.name)
    if states is None:
        states = host.get_fact(RunningServices, project=project)
    present = [s for s in services if s in states]
    if not present:
        host.noop(f"{', '.join(services)}: not running")
        return
    yield StringCommand(commands.to_shell(commands.compose(project_dir, project, "rm", "--stop", "--force", *present)))


class RunningServices(FactBase):
    """Services of a compose project that have a container (any state)."""

    def command(self, project: str) -> str:
        return commands.to_shell(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                                  "--format", '{{.Label "com.docker.compose.service"}}'])

    @staticmethod
    def default():
        return set()

    def process(self, output):
        return {line.strip() for line in output if line.strip()}


def release_checked(project_dir: str, project: str, new_image: str, live_service: str, argv: list[str],
                    refusal: Callable[[str, str | None, str], str | None], live_version: str) -> None:
    """A component's ReleaseCheck, before a release's migrations run (pyinfra python.call):
    ``argv`` in the new image and in the live colour's service; a refusal stops the deploy before
    anything of the environment changed."""
    ok, new = remote.run(["docker", "run", "--rm", new_image, *argv])
    if not ok:
        raise OperationError(f"host {host.name}: `{' '.join(argv)}` in the new image {new_image} failed:\n"
                             f"{new.stderr or new.stdout}")
    live_ok, live = remote.run(commands.compose(project_dir, project, "exec", "-T", live_service, *argv))
    why = refusal(new.stdout, live.stdout if live_ok else None, live_version)
    if why:
        print(f"host {host.name}: release refused before its migrations: {why}", flush=True)
        raise OperationError(f"host {host.name}: release refused before its migrations (above)")
    host.noop(f"{new_image}: its migrations keep the live version {live_version} working")
