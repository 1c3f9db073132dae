"""Images from the deploying machine to an environment's hosts, with the registry on
(docs/registry.md) — the hosts then need no package mirror and no registry of the internet:

- the registry's own image, which its host needs before the registry can answer, goes over SSH
  (shipyard.apply.image_ship);
- ``push``: images this machine's engine built, pushed to the registry through an SSH tunnel to
  the registry's host (the deploying machine needs to reach only SSH), logged in with a Docker
  configuration of its own that is removed afterwards (nothing written to ~/.docker). The engine
  reaches the tunnel on 127.0.0.1, which Docker treats as an insecure registry (no certificate
  check): the hop is SSH's, whose host key the inventory's known hosts vouch for. The hosts pull
  by the registry's name, over TLS checked against its CA (client.trust_files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from shipyard.components.registry import certificates, client
from shipyard.errors import ShipyardError
from shipyard.controller.ssh import port_tunnel
from shipyard.settings import EnvironmentSettings

PUSH_TIMEOUT_S = 1800  # one image: a cold push of the largest over a slow link
# Pushes at once after the first (client.push_rounds): the engine compresses each layer it sends
# on the deploying machine's cores, and one push keeps about one busy (vmstat while the first
# goes alone: half of two cores idle). 2 to 5 measured the same on two cores (docs/registry.md).
PUSH_AT_ONCE = 3


def _run(argv: list[str], what: str, fix: str, timeout_s: float = 120, stdin: bytes | None = None,
         env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s, env=env, check=False)
    if done.returncode != 0:
        raise ShipyardError(what, f"`{' '.join(argv[:3])} ...` failed: {done.stderr.decode(errors='replace').strip()[-500:]}",
                            fix)
    return done.stdout.decode(errors="replace").strip()


def registry_tunnel(settings: EnvironmentSettings):
    """``127.0.0.1:<port>`` on this machine, forwarded over SSH to the registry on its host."""
    host = settings.hosts_with_role("registry")[0]
    return port_tunnel(host, host.address, settings.ports.registry, "the registry")


def _layers(refs: Sequence[str], environ: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """ref → its layer ids (base first), ref → its size in bytes, as this machine's engine holds it."""
    out = _run(["docker", "image", "inspect", "--format", "{{.Size}} {{json .RootFS.Layers}}", *refs], "images to push",
               "the deploying machine's engine must hold the images: build them first (make deploy does)", env=environ)
    read = [line.split(" ", 1) for line in out.splitlines()]
    return ({ref: json.loads(layers) for ref, (_, layers) in zip(refs, read)},
            {ref: int(size) for ref, (size, _) in zip(refs, read)})


def _pushed(settings: EnvironmentSettings, tunnel: str, ref: str, environ: dict[str, str]) -> str:
    """``ref`` tagged with its name through the tunnel, pushed, the tag removed: the line saying so."""
    through = f"{tunnel}/{client.repository_ref(ref)}"
    _run(["docker", "tag", ref, through], f"image {ref}",
         "the deploying machine's engine must hold the image: build it first (make deploy does)", env=environ)
    try:
        started = time.monotonic()
        _run(["docker", "push", "--quiet", through], f"image {ref}",
             f"check the registry host's disk and the registry's log (make logs ENV={settings.name} "
             "SERVICE=registry), then deploy again", PUSH_TIMEOUT_S, env=environ)
        return f"pushed {ref} as {client.pushed_ref(settings, ref)} ({time.monotonic() - started:.1f}s)"
    finally:
        subprocess.run(["docker", "image", "rm", through], capture_output=True, timeout=60, env=environ, check=False)


def push(settings: EnvironmentSettings, refs: Sequence[str], password: str) -> list[str]:
    """Each of ``refs`` (this machine's engine holds them) pushed to the registry under
    client.repository_ref, in client.push_rounds' order, PUSH_AT_ONCE at a time after the first:
    lines saying what was pushed, in ``refs``' order. A failed push lets the others end, then
    raises (the first failure in ``refs``' order); what was pushed stays (the next deploy pushes
    only what a host lacks)."""
    config = tempfile.mkdtemp(prefix="shipyard-docker-config-")
    environ = {**os.environ, "DOCKER_CONFIG": config}
    done: dict[str, str] = {}
    failed: dict[str, ShipyardError] = {}
    try:
        with registry_tunnel(settings) as tunnel:
            _run(["docker", "login", "--username", certificates.USER, "--password-stdin", tunnel],
                 f"registry of {settings.name} (through {tunnel})",
                 f"check the registry runs (make status ENV={settings.name}) with this checkout's registry_password",
                 stdin=password.encode(), env=environ)
            for round_refs in client.push_rounds(*_layers(refs, environ)):
                with ThreadPoolExecutor(max_workers=PUSH_AT_ONCE) as pool:
                    futures = {ref: pool.submit(_pushed, settings, tunnel, ref, environ) for ref in round_refs}
                for ref, future in futures.items():
                    try:
                        done[ref] = future.result()
                    except ShipyardError as err:
                        failed[ref] = err
                if failed:
                    break
    finally:
        shutil.rmtree(config, ignore_errors=True)
    if failed:
        raise next(failed[ref] for ref in refs if ref in failed)
    return [done[ref] for ref in refs]
