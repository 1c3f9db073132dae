"""pyinfra operations that ship one host's rendered project and secrets, then converge it in
the environment's rollout steps (shipyard.rollout_order.rollout_steps): a step finishes on every
host before the next begins, so tiers converge in order across hosts."""

from __future__ import annotations

import _thread
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyinfra.api.exceptions import OperationError
from pyinfra.operations import python

from shipyard import audit, commands, image_plan, bluegreen, rollout_order, topology
from shipyard.apply import converge, handoff, rotation
from shipyard.apply.converge import ServiceState, converge_host
from shipyard.apply.guard import FINGERPRINTS
from shipyard.apply.private_files import WantedPath, project_paths
from shipyard.apply.releasestate import colour_removed, routing_paths
from shipyard.apply.rotation import RETIRING_SUFFIX, LiveRotation
from shipyard.component import CommandContext, SecretFile
from shipyard.errors import ShipyardError
from shipyard.render import RenderedHost, render_secret_file, secret_variables
from shipyard.render.compose import secrets_env
from shipyard.bluegreen import ReleaseState
from shipyard.secretstore import Secret, fingerprints, fingerprints_text
from shipyard.settings import EnvironmentSettings


def project_files(root: str, rendered: RenderedHost) -> list[WantedPath]:
    """The rendered project and the static files: directories 0755 and files 0644, owned by root."""
    shipped = rendered.shipped
    wanted = [WantedPath(root, 0, "755")]
    dirs = set()
    for path in shipped:
        parts = path.split("/")[:-1]
        dirs |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    wanted += [WantedPath(f"{root}/{rel}", 0, "755") for rel in sorted(dirs)]
    wanted += [WantedPath(f"{root}/{rel}", 0, "644", content) for rel, content in shipped.items()]
    return wanted


def _secret_content(inst: topology.Instance, secret: SecretFile, value: Secret,
                    variables: dict[str, dict[str, Any]]) -> bytes:
    if secret.template:
        return render_secret_file(inst.component, secret.template, secret.secret, value.value,
                                  variables.get(inst.component.name))
    return value.value.encode()


def secret_files(root: str, on_host: tuple[topology.Instance, ...], values: dict[str, Secret],
                 previous: dict[str, Secret] | None = None,
                 variables: dict[str, dict[str, Any]] | None = None,
                 versions: dict[str, str] | None = None) -> list[WantedPath]:
    """Each service gets its own copy of what it needs: mode 0400, owned by the uid that reads it,
    in a 0500 directory of that uid, under a 0700 root-only secrets directory. During a rotation
    (``previous``: name → the value it replaces) a server that takes the new value live also gets
    the old one as ``<target>.retiring``, to authenticate with until it has switched.
    ``versions``: the release state's image version variables, which the project's .env holds too."""
    previous, variables = previous or {}, variables or {}
    # What this host runs with, by fingerprint: a deploy holding other secrets stops (guard.py).
    wanted = [WantedPath(f"{root}/secrets", 0, "700"),
              WantedPath(f"{root}/secrets/{FINGERPRINTS}", 0, "400", fingerprints_text(values)),
              WantedPath(f"{root}/.env", 0, "600", secrets_env(on_host, fingerprints(values)) + "".join(
                  f"{name}={value}\n" for name, value in sorted((versions or {}).items())).encode())]
    for inst in on_host:
        svc = inst.service
        if not inst.secrets:
            continue
        folder = f"{root}/secrets/{inst.name}"
        wanted.append(WantedPath(folder, svc.uid, "500"))
        for s in inst.secrets:
            wanted.append(WantedPath(f"{folder}/{s.target}", svc.uid, "400", _secret_content(inst, s, values[s.secret], variables)))
            if (s.rotation is not None or s.keep_previous) and s.secret in previous:
                wanted.append(WantedPath(f"{folder}/{s.target}{RETIRING_SUFFIX}", svc.uid, "400",
                                         _secret_content(inst, s, previous[s.secret], variables)))
    return wanted


def live_rotations(on_host: tuple[topology.Instance, ...], rotating: set[str]) -> tuple[list[LiveRotation], list[LiveRotation]]:
    """The apply and retire commands of the rotating secrets on this host's servers."""
    apply, retire = [], []
    for inst in on_host:
        for s in inst.secrets:
            if s.rotation is None or s.secret not in rotating:
                continue
            if s.rotation.apply:
                apply.append(LiveRotation(inst.name, s.secret, s.rotation.apply))
            if s.rotation.retire:
                retire.append(LiveRotation(inst.name, s.secret, s.rotation.retire))
    return apply, retire


def service_states(settings: EnvironmentSettings, rendered: RenderedHost,
                   state: ReleaseState | None = None) -> dict[str, ServiceState]:
    """What the converge step needs to know of each service on the host (plain data: it is
    handed to a pyinfra python.call). Of a coloured service, only the colours the release
    ``state`` converges (the live one, or the one a release is starting)."""
    state = state or ReleaseState()
    on_host = topology.build(settings).instances_on(rendered.host)
    names = {i.name for i in on_host}
    variables = state.env_variables()
    states = {}
    for inst in on_host:
        if inst.colour is not None and inst.colour not in state.colours_to_converge():
            continue
        svc = inst.service
        same_host_deps = tuple(d.name for d in rollout_order.dependencies(topology.build(settings), inst) if d.name in names
                               and d.host.name == inst.host.name)
        states[inst.name] = ServiceState(
            name=inst.name, tier=svc.tier, replicas=svc.scale(settings) if svc.scale else 1,
            image=image_plan.resolved_ref(image_plan.versioned_ref(settings, inst.component, svc.image, inst.colour), variables),
            one_shot=svc.one_shot,
            reload_signal=svc.reload_signal, depends_on=same_host_deps)
    return states


def setups_ahead(settings: EnvironmentSettings) -> list[Callable[[], None]]:
    """What the environment's live setups make ready before their turn (LiveSetup.ahead)."""
    topo = topology.build(settings)
    points = rollout_order.setup_points(topo, rollout_order.rollout_steps(topo))
    # In the order they run: the first has the most need of it.
    return [functools.partial(comp.live_setup.ahead, settings) for point in sorted(points) for comp in points[point]
            if comp.live_setup.ahead is not None]


def load_ahead(calls: Sequence[Callable[[], None]]) -> None:
    """``calls`` (setups_ahead) run in the background, so that the live setups do not import
    their clients or open their connections in their turn (~0.5 s in `multi`). Under pyinfra's
    gevent the thread is a greenlet, which runs only when the caller waits on a host: called
    just before a round trip (the lock's, shipyard.apply.hostlock), not while the deploy file is
    prepared (no host is waited on there). threading.Thread.start would run it to its end at
    once (it waits for the thread's start: a switch to the new greenlet, which does not yield
    while it imports). A call that fails is left alone here: its setup meets the same and fails
    saying why."""
    def run() -> None:
        for call in calls:
            try:
                call()
            except Exception:  # noqa: BLE001 (reported by the setup itself)
                pass

    if calls:
        _thread.start_new_thread(run, ())


def run_live_setup(component: str, run: Callable[[CommandContext], list[str]], context: CommandContext) -> None:
    """A component's live setup (Component.live_setup), on the deploying machine: its lines
    printed; an error stops the rollout before the services that need it."""
    run_live_setups([(component, run)], context)


def run_live_setups(setups: Sequence[tuple[str, Callable[[CommandContext], list[str]]]],
                    context: CommandContext) -> None:
    """The live setups of one point of the rollout (shipyard.rollout_order.setup_points: nothing
    orders them among themselves), at once — each mostly waits on its servers — their lines
    printed component by component; every one that failed is reported, and stops the rollout."""
    def lines_of(component: str, run: Callable[[CommandContext], list[str]]) -> list[str]:
        try:
            return run(context)
        except ShipyardError as err:
            # Its text says where, what and the fix. pyinfra prints the traceback of whatever a
            # python.call raises: not the chain of the client's own errors above that text.
            raise OperationError(f"{component}'s live setup stopped the rollout: {err}") from None

    if len(setups) == 1:
        results = [_outcome(lines_of, *setups[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(setups)) as pool:
            results = list(pool.map(lambda setup: _outcome(lines_of, *setup), setups))
    for (component, _), (lines, error) in zip(setups, results):
        for line in lines:
            print(f"shipyard: {component}: {line}", flush=True)
    errors = [error for _, error in results if error is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise OperationError("\n".join(str(error) for error in errors))


def _outcome(call: Callable, *args) -> tuple[list[str], BaseException | None]:
    try:
        return call(*args), None
    except OperationError as error:
        return [], error


def _handoff_targets(settings: EnvironmentSettings, on_host, converging, comp) -> dict[str, tuple[str, int]]:
    """Instance → (hand-off directory, uid) of this host's instances, converged by this deploy,
    that wait for ``comp``'s live setup."""
    topo = topology.build(settings)
    return {inst.name: (commands.handoff_dir(settings.deploy_root, settings.name, comp.name, inst.name), inst.service.uid)
            for inst in on_host if inst.name in converging and comp in rollout_order.setups_waited_for(topo, inst)}


def ship_project(settings: EnvironmentSettings, rendered: RenderedHost, values: dict[str, Secret],
                 previous: dict[str, Secret] | None, state: ReleaseState, also: Sequence[WantedPath] = ()) -> None:
    """The host's rendered project, its secret files and its release routing, and ``also``
    (files of the host's own, outside the project: the engine's trust of an image delivery)."""
    root = commands.project_dir(settings.deploy_root, settings.name)
    on_host = topology.build(settings).instances_on(rendered.host)
    # Before any container may mount it (the log shipper does, read-only): a bind mount of a
    # missing file would make the engine create a directory there. Never truncated.
    trail = audit.audit_log_path(settings.deploy_root, settings.name)
    wanted = [WantedPath(trail, 0, f"{audit.LOG_MODE:o}", b"", keep_content=True)]
    wanted += project_files(root, rendered) + secret_files(root, on_host, values, previous,
                                                           secret_variables(settings, rendered.host),
                                                           state.env_variables())
    roots, routed = [root], []
    for inst in on_host:
        if inst.service.routing_mount and inst.component.release_routing:
            routing_root, routing = routing_paths(settings.deploy_root, settings.name,
                                                  inst.component.release_routing(state.live, bluegreen.other(state.live)))
            if routing_root not in roots:
                roots.append(routing_root)
                wanted += [w for w in routing if w.path not in {have.path for have in wanted}]
            routed.append(inst.name)
    wanted += list(also)
    # One operation (one read, at most one archive): the project, its secrets, the audit
    # trail's file, the release routing of the routers here and the host files asked for.
    what = f"project files and secrets in {root}" + (f", release routing of {', '.join(routed)}: users on {state.live}"
                                                       if routed else "") + "".join(f", {w.path}" for w in also)
    images = tuple(sorted({s.image for s in service_states(settings, rendered, state).values()}))
    project_paths(name=what, roots=tuple(roots), wanted=wanted, then_read=(root, settings.compose_project, images))


def read_ahead(settings: EnvironmentSettings, rendered: RenderedHost, state: ReleaseState) -> None:
    """The host's project state read once, after ``ship_project``, for every converge of the
    deploy that follows while nothing changes the host (shipyard.apply.converge.read_ahead)."""
    states = service_states(settings, rendered, state)
    python.call(name="the project's state read", function=converge.read_ahead,
                project_dir=commands.project_dir(settings.deploy_root, settings.name), project=settings.compose_project,
                refs=sorted({s.image for s in states.values()}))


def start_first(settings: EnvironmentSettings, rendered: RenderedHost, state: ReleaseState, names: list[str],
                why: str) -> None:
    """Converge ``names`` of the host's services alone (its project shipped: ``ship_project``),
    ahead of the rollout's steps (the image registry, which the other services' images come
    through); the steps then find them up to date."""
    states = service_states(settings, rendered, state)
    python.call(name=f"{', '.join(names)} first: {why}", function=converge_host,
                project_dir=commands.project_dir(settings.deploy_root, settings.name), project=settings.compose_project,
                services={name: states[name] for name in names},
                timeouts={states[name].tier: getattr(settings.health, f"{states[name].tier}_timeout_s") for name in names},
                last_good_dir=commands.last_good_dir(settings.deploy_root, settings.name), reuse_state=True)


def roll_out(settings: EnvironmentSettings, rendered: RenderedHost, values: dict[str, Secret],
             previous: dict[str, Secret] | None = None, state: ReleaseState | None = None, now: float = 0.0,
             setup_context: CommandContext | None = None, runs_setups: bool = False, shipped: bool = False) -> None:
    """``shipped``: the host's project was shipped earlier in this deploy (``ship_project``, ahead
    of an image delivery);
    ``previous``: name → the value a pending rotation replaces (shipyard.apply.rotation);
    ``state``: the host's release state (shipyard.bluegreen), which the deploy keeps;
    ``setup_context``: what the live setups (Component.live_setup) and their hand-offs get; the
    one host with ``runs_setups`` (the first) carries the setups between the steps: they run
    once, on the deploying machine. Every host then writes what its instances are handed."""
    state = state or ReleaseState()
    root = commands.project_dir(settings.deploy_root, settings.name)
    on_host = topology.build(settings).instances_on(rendered.host)
    if not shipped:
        ship_project(settings, rendered, values, previous, state)
    apply_live, retire_live = live_rotations(on_host, set(previous or {}))
    if previous:
        python.call(name=f"rotated {', '.join(sorted(previous))}: servers take the new value",
                    function=rotation.run_phase, project_dir=root, project=settings.compose_project,
                    phase="apply", steps=apply_live)
    states = service_states(settings, rendered, state)
    timeouts = {tier: getattr(settings.health, f"{tier}_timeout_s") for tier in {s.tier for s in states.values()}}
    last_good = commands.last_good_dir(settings.deploy_root, settings.name)
    topo = topology.build(settings)
    steps = rollout_order.rollout_steps(topo)
    setups = rollout_order.setup_points(topo, steps) if setup_context is not None else {}
    for number, step in enumerate(steps, 1):
        mine = step.get(rendered.host.name, ())
        later = sorted({states[name].image for after in steps[number:] for name in after.get(rendered.host.name, ())
                        if name in states})
        python.call(name=f"converge {settings.compose_project}, step {number} of {len(steps)}",
                    function=converge_host, project_dir=root, project=settings.compose_project,
                    services={name: states[name] for name in mine if name in states}, timeouts=timeouts,
                    last_good_dir=last_good, later_images=later, reuse_state=True)
        # pyinfra runs an operation on every host before the next: the other hosts' next step
        # waits for this one host's setup.
        here = setups.get(number - 1, ())
        if runs_setups and here:
            python.call(name=f"{', '.join(c.name for c in here)}: live setup{'s' if len(here) > 1 else ''} "
                             "on the deploying machine", function=run_live_setups,
                        setups=[(c.name, c.live_setup.run) for c in here], context=setup_context)
        for comp in here:
            targets = _handoff_targets(settings, on_host, states, comp) if comp.live_setup.deliver else {}
            if targets:
                python.call(name=f"{comp.name}: hand-off to {', '.join(targets)}", function=handoff.hand_off,
                            component=comp.name, deliver=comp.live_setup.deliver, context=setup_context,
                            targets=targets)
    # A warm previous colour read the old value of a secret being rotated, which the servers
    # refuse once it is retired: it goes (the rollback target is started afresh instead).
    removed = set(state.colours_to_remove(now)) | ({state.idle} if previous else set())
    idle = sorted(i.name for i in on_host if i.colour in removed)
    if idle:
        colour_removed(name=f"the idle colour removed (not kept warm): {', '.join(idle)}", project_dir=root,
                       project=settings.compose_project, services=idle)
    if previous:
        python.call(name=f"rotated {', '.join(sorted(previous))}: servers drop the old value",
                    function=rotation.retire, project_dir=root, project=settings.compose_project, steps=retire_live)


def last_good_command(settings: EnvironmentSettings) -> str:
    """The shell command that keeps a copy of the project as this deploy left it, every service
    healthy: what a later deploy that fails restores the services it took down from
    (shipyard.apply.converge). Run by the deploy's last operation, with the lock's release
    (one round trip: deploy.py)."""
    root = commands.project_dir(settings.deploy_root, settings.name)
    last_good = commands.last_good_dir(settings.deploy_root, settings.name)
    new = f"{last_good}.new"
    # Copied only when it differs (a no-op deploy stays cheap); replaced whole, by a rename.
    return " ".join([commands.to_shell(["diff", "-rq", root, last_good]), ">/dev/null 2>&1", "||", "{",
                     commands.to_shell(["rm", "-rf", new]), "&&", commands.to_shell(["cp", "-a", root, new]),
                     "&&", commands.to_shell(["rm", "-rf", last_good]), "&&",
                     commands.to_shell(["mv", new, last_good]), ";", "}"])
