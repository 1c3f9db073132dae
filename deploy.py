"""pyinfra deploy file: thin. Run through `make up` / `make deploy ENV=...` (shipyard.cli),
which validates and renders before any host is touched, fetches the wheelhouse once, and
holds the environment's lock.

    pyinfra -y inventories/<env>.py deploy.py --data shipyard_env=<env> [--data shipyard_wheelhouse=DIR]
        [--data shipyard_pinned_wheels=DIR]
"""

import functools
import contextlib
import json
import time
from pathlib import Path

from pyinfra import host
from pyinfra.operations import python

from shipyard import commands, hostsysctl, image_plan, topology
from shipyard.apply.engine import ensure_docker_engine
from shipyard.apply.guard import ensure_ports_free, ensure_same_secrets, read_with_lock
from shipyard.apply.hostlock import host_lock, host_unlock, lock_file, owner_line
from shipyard.apply import image_delivery
from shipyard.apply.image_build import ensure_images
from shipyard.apply.image_pull import ensure_official_images
from shipyard.apply.releasestate import check_release_start, host_release_state, release_checked, state_path
from shipyard.apply.rollout import last_good_command, load_ahead, roll_out, setups_ahead
from shipyard.apply.sysctl import ensure_host_sysctls
from shipyard.component import CommandContext
from shipyard.errors import RolloutError
from shipyard.inventory import load_environment
from shipyard.render import render_host
from shipyard.secretstore import load_or_create, previous_values

REPO = Path(__file__).resolve().parent

settings = load_environment(REPO, host.data.get("shipyard_env"))
this_host = next((h for h in settings.hosts if h.connect == host.name), None)
if this_host is None:
    raise RolloutError(f"host {host.name}", f"not a host of environment {settings.name} (inventories/{settings.name}.py)",
                       "deploy through `make deploy ENV=<name>`: the inventory and shipyard_env name one environment")
# A deploy with LIMIT (cli.check_limit) changes these hosts only; the first of them carries
# what the deploying machine does once (the builds, the live setups).
deployed = settings.limited(host.data.get("shipyard_limit"))
# The images this host's services run: only those are pulled or built here.
needed = [(i.component, i.service.image) for i in topology.build(settings).instances_on(this_host)]

secrets = load_or_create(REPO, settings.name, generate_missing=settings.secrets.generate_missing)
# A pending rotation (make secrets-rotate): the values it replaces, still run by the servers.
previous = previous_values(REPO, settings.name)

# Blue-green (shipyard.bluegreen): the host's release state decides the versions and the colours
# it runs; a release passes the colour it is starting (shipyard.controller.releases).
first_version = image_plan.first_version(settings)
# Read by `make up` with its reachability check (all hosts at once), else here. (pyinfra's
# --data gives a JSON value parsed already.)
read_states = host.data.get("shipyard_release_states") or {}
read_states = json.loads(read_states) if isinstance(read_states, str) else read_states
state, released = host_release_state(settings.deploy_root, settings.name, first_version or "",
                                     read_states.get(host.name))
starting = host.data.get("shipyard_release_start")
if starting:
    check_release_start(state, starting, f"host {host.name}: {state_path(settings.deploy_root, settings.name)}")
# The version a deploy may build: the one a release starts (unless it is prebuilt), else the
# live one, kept as it is once a release made it live (its colour runs that image).
version = state.versions[starting] if starting else state.live_version
keep = bool(host.data.get("shipyard_release_prebuilt")) if starting else released
# With an image delivery (the registry) the deploying machine builds, not the hosts.
delivering = image_plan.delivery(settings)
# First, the environment's lock on the host (deploys from another machine meet here), then,
# before anything on the host changes: the host runs with these secrets (or none yet).
lock, owner = lock_file(settings.deploy_root, settings.name), owner_line(str(REPO))
project_dir = commands.project_dir(settings.deploy_root, settings.name)
# The guards' one read (also noting which delivered images the host holds, for image_delivery's
# checks) goes with the lock, once it is taken: one round trip.
held = image_delivery.held_refs(settings, this_host, version) if delivering else ()
read_command, keep_read = read_with_lock(project_dir, held)
# The host that carries the live setups (below) has the deploying machine make them ready
# (their clients, their connections) while its lock's round trip waits.
ahead = setups_ahead(settings) if this_host is deployed[0] else []
host_lock(name=f"the environment's lock on the host ({lock})", path=lock, owner=owner, then=read_command,
          keep=keep_read, meanwhile=functools.partial(load_ahead, ahead) if ahead else None)
ensure_same_secrets(project_dir, settings.name, secrets, previous, images=held)
ensure_ports_free(settings, this_host)
ensure_docker_engine(debootstrap=image_plan.needs_debootstrap(settings, needed) and not delivering)
ensure_official_images(image_plan.images_to_pull(settings, needed), settings.name)
rendered = render_host(settings, this_host)
if delivering:
    # Hosts that cannot build (no package mirror): the deploying machine builds every image once,
    # the delivering component (the registry) starts first on its host, each host pulls its own.
    image_delivery.deliver(delivering, settings, this_host, REPO, version, keep, rendered, secrets, previous,
                           state, deployed, wheelhouse=host.data.get("shipyard_wheelhouse"),
                           wheels_dir=host.data.get("shipyard_pinned_wheels"))
else:
    ensure_images(image_plan.build_plan(REPO, settings, needed, version, keep), repo_root=str(REPO),
                  remote_build_root=f"{settings.deploy_root}/build", wheelhouse=host.data.get("shipyard_wheelhouse"),
                  wheels_dir=host.data.get("shipyard_pinned_wheels"))
# The kernel settings its services need (Elasticsearch's vm.max_map_count), only where they run:
# once the images are there (a deploy that cannot get them stops before changing the kernel).
ensure_host_sysctls(settings.name, hostsysctl.needed(settings, this_host))
if starting and state.versions[starting] == state.newest:
    # Before a release's migrations (a rollback runs none): each component's check of the new
    # version against the live one.
    for inst in topology.build(settings).instances_on(this_host):
        check = inst.component.release_check
        if inst.colour == state.live and check and inst.service.name == check.service:
            new_image = image_plan.resolved_ref(image_plan.versioned_ref(settings, inst.component, inst.service.image, starting),
                                            state.env_variables())
            python.call(name=f"release check of {inst.component.name}: {' '.join(check.argv)}",
                        function=release_checked, project_dir=project_dir, project=settings.compose_project,
                        new_image=new_image, live_service=inst.name, argv=list(check.argv), refusal=check.refusal,
                        live_version=state.live_version or "")
# The live setups (Component.live_setup) run once, from the deploying machine, carried by the
# first host deployed; the environment's lock is held by `make up` around all of this.
setup_context = CommandContext(settings, REPO, {}, contextlib.nullcontext, lambda name: secrets[name].value)
roll_out(settings, rendered, secrets, previous, state, time.time(), setup_context,
         runs_setups=this_host is deployed[0], shipped=bool(delivering))
# The last round trip: a copy of the project as this deploy left it (what a later failed deploy
# restores from), then the lock's release.
host_unlock(name=f"keep a copy of the project as deployed ({commands.last_good_dir(settings.deploy_root, settings.name)}), "
                 "release the environment's lock", path=lock, owner=owner, first=last_good_command(settings))
