"""`make bench-rollout`: Shipyard's rollout against plain `docker compose`, in one run, on the same
rendered files and the same (already built) images.

Prints cold rollout seconds, no-op re-run seconds, the plain compose figures and the ratios,
then the idle CPU of the rolled-out stack beside them (tests/bench/bench_idle.py): the health
probes are slow once a container is up, which must not slow the rollout's gates.
Targets: no-op re-run ≤ 3 s; cold rollout ≤ 1.1× plain compose; idle ≤ 5 % of one core.

The plain compose baseline runs what Shipyard runs, the way a user of plain compose would:
`up -d --wait` of the long-running services (and the one-shots they wait for, which compose
gates with service_completed_successfully), then each one-shot nothing waits for (the Consul
agent token job) with `up -d` and `docker wait` for its exit code: `--wait` takes such a
container's exit, even 0, for a failure. The services are those Shipyard's rollout ran (one
colour of a blue-green service, not both).

The environment (tests/bench/benchenv.py): a real one is refused; cold rollouts delete its data,
so one found deployed is refused unless --wipe (`make bench-rollout WIPE=1`); it ends removed
(`make down VOLUMES=1`). --short: one run, no idle window (`make test` runs it so).

On several hosts (`--env multi`, `make bench-rollout ENV=multi`, issue 25): the bench makes the
three test hosts of inventories/multi.py (tests/testhosts.py: network namespaces with their own
dockerd and sshd on this machine) and removes them at the end. It times the first deploy to the
fresh hosts (every image through the environment's registry: shipped to h1 over SSH, pushed from
here, pulled by each host), the no-op re-run, and a cold rollout with the images present
(`make down VOLUMES=1`, then `up`); beside them, in the same run, the single-host figures of `ci` as
above (without --short; ci's rule as above: refused when deployed unless --wipe). Targets: no-op
≤ 5 s; cold ≤ 1.5× the single-host cold rollout. --short: the first deploy and one no-op only, no
single-host part (`make test` runs it so, after the ci rollout built the images).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard import commands  # noqa: E402
from shipyard.controller import teardown  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from tests import testhosts  # noqa: E402
from tests.bench import benchenv  # noqa: E402

WAIT_TIMEOUT_S = 600


def run(argv: list[str]) -> tuple[float, str]:
    """(seconds, stdout) of a command that must succeed."""
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return took, result.stdout


def timed(argv: list[str]) -> float:
    return run(argv)[0]


def plain_compose_steps(compose_file: Path, services: list[str]) -> tuple[list[str], list[str]]:
    """(services for one `up -d --wait`, one-shots to start after it and wait for): a one-shot
    (restart 'no') that no other of ``services`` depends on is not gated by anything, and
    `--wait` would take its exit for a failure."""
    spec = yaml.safe_load(compose_file.read_text())["services"]
    waited_for = {dep for name in services for dep in (spec[name].get("depends_on") or {})}
    last = [name for name in services if str(spec[name].get("restart")) == "no" and name not in waited_for]
    return [name for name in services if name not in last], last


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def single_host(env: str, runs: int, idle_seconds: float, wipe: bool) -> dict[str, float]:
    """Shipyard's cold and no-op rollout of ``env`` on this machine's engine beside plain compose's,
    printed; the medians returned."""
    # Plain compose cannot run a live setup between two steps (Vault's, which hands the API and
    # workers what they log in with under secrets.backend vault): both sides run the files
    # backend, so that they start the same services the same way. Said in the output.
    os.environ["SHIPYARD_SECRETS__BACKEND"] = "age"
    try:
        return _single_host(env, runs, idle_seconds, wipe)
    finally:
        del os.environ["SHIPYARD_SECRETS__BACKEND"]


def _single_host(env: str, runs: int, idle_seconds: float, wipe: bool) -> dict[str, float]:
    settings = load_environment(REPO, env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-rollout")
    was = benchenv.found(settings)
    if was.deployed and not wipe:
        sys.exit(f"bench-rollout: environment {env} is {was.describe()}: its cold rollouts delete its data\n"
                 f"  fix: remove it first if its data may go (make down ENV={env} VOLUMES=1), or say so: "
                 f"make bench-rollout WIPE=1 (--wipe)")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    project = settings.compose_project
    shipyard_up = [sys.executable, "-m", "shipyard", "up", "--env", env]

    def down() -> None:
        # What `make down VOLUMES=1` runs, its project dir kept (plain compose's runs need it);
        # not timed: no figure includes it.
        if teardown.compose_down(project_dir, project, volumes=True, echo=False) != 0:
            sys.exit(f"bench: `docker compose down` of {project} failed (its output above)")

    try:
        # Warm-up: engine, images and files in place, so every figure below is "images present".
        timed(shipyard_up)
        # What Shipyard runs (the live colour, the one-shots): the baseline runs the same.
        _, listed = run(commands.compose(project_dir, project, "ps", "-a", "--format", "{{.Service}}"))
        gated, last = plain_compose_steps(Path(project_dir, "compose.yaml"), sorted(set(listed.split())))

        def plain_up() -> float:
            took = timed(commands.compose_up_wait(project_dir, project, gated, WAIT_TIMEOUT_S))
            for name in last:
                took += timed(commands.compose_up_detached(project_dir, project, [name]))
                waited, code = run(commands.docker_wait(f"{project}-{name}-1", WAIT_TIMEOUT_S))
                if code.strip() != "0":
                    sys.exit(f"bench: plain compose: one-shot {name} exited {code.strip() or 'without a code'}")
                took += waited
            return took

        figures: dict[str, list[float]] = {k: [] for k in ("cold", "noop", "plain_cold", "plain_noop")}
        for _ in range(runs):
            down()
            figures["cold"].append(timed(shipyard_up))
            figures["noop"].append(timed(shipyard_up))
            down()
            figures["plain_cold"].append(plain_up())
            figures["plain_noop"].append(plain_up())
        idle = ""
        if idle_seconds:
            down()
            timed(shipyard_up)
            idle = subprocess.run([sys.executable, str(REPO / "tests/bench/bench_idle.py"), "--env", env,
                                   "--seconds", str(idle_seconds)], cwd=REPO, capture_output=True, text=True).stdout
    finally:
        # Like `make down VOLUMES=1`: the project dir (and the secrets it records) goes too. Found
        # not deployed, that is as it was found; found deployed, --wipe said its data may go.
        removed = benchenv.remove(env, "bench-rollout")
    if not removed:
        sys.exit(1)

    med = {k: median(v) for k, v in figures.items()}
    print(f"bench-rollout env={env} runs={runs} (median seconds; secrets.backend age on both sides: "
          f"plain compose cannot run Vault's live setup between steps)")
    print(f"  shipyard cold rollout      {med['cold']:6.2f}")
    print(f"  shipyard no-op re-run      {med['noop']:6.2f}   target <= 3.00  {'OK' if med['noop'] <= 3 else 'MISSED'}")
    print(f"  plain compose cold         {med['plain_cold']:6.2f}   ({len(gated)} services with --wait, then "
          f"{', '.join(last) or 'no one-shot'} alone)")
    print(f"  plain compose no-op        {med['plain_noop']:6.2f}")
    ratio = med['cold'] / med['plain_cold']
    print(f"  cold ratio shipyard/plain  {ratio:6.2f}x  target <= 1.10  {'OK' if ratio <= 1.1 else 'MISSED'}")
    print(f"  no-op ratio shipyard/plain {med['noop'] / med['plain_noop']:6.2f}x")
    if idle:
        print(idle.rstrip())
    return med


NOOP_RUNS = 3


def several_hosts(env: str, runs: int, short: bool) -> dict[str, float]:
    """The first deploy of ``env`` to freshly made test hosts, its no-op re-runs and (not --short)
    cold rollouts with the images present, printed; the medians returned. The hosts are removed
    at the end, also when a deploy failed."""
    settings = load_environment(REPO, env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-rollout")
    if not all(ipaddress.ip_address(h.address) in testhosts.MULTI_SUBNET for h in settings.hosts):
        sys.exit(f"bench-rollout: environment {env}: its hosts are not the test hosts this bench makes "
                 f"({testhosts.MULTI_SUBNET}, inventories/multi.py)\n  fix: ENV=multi, or ENV=ci for one host")
    shipyard_up = [sys.executable, "-m", "shipyard", "up", "--env", env]
    # The hosts and all on them are the bench's own: removing the environment's data is its to do.
    shipyard_down = benchenv.down_argv(env, volumes=True)
    figures: dict[str, list[float]] = {k: [] for k in ("first", "noop", "cold")}
    with testhosts.multi_hosts():
        took, out = run(shipyard_up)
        figures["first"].append(took)
        built_here = out.count("[deploying machine] build ")
        # A no-op costs seconds: three at least, also in a short run (one sample of a few
        # seconds on a shared machine says little), each printed.
        for _ in range(max(runs, NOOP_RUNS)):
            figures["noop"].append(timed(shipyard_up))
        for _ in range(0 if short else runs):
            timed(shipyard_down)
            figures["cold"].append(timed(shipyard_up))
        timed(shipyard_down)
    med = {k: median(v) for k, v in figures.items() if v}
    hosts = ", ".join(h.name for h in settings.hosts)
    print(f"bench-rollout env={env} on {len(settings.hosts)} test hosts ({hosts}) runs={runs} (median seconds)")
    print(f"  first deploy, images through the registry   {med['first']:6.2f}"
          + (f"   ({built_here} images built here first)" if built_here else "   (no image built: all present here)"))
    print(f"  no-op re-run                                {med['noop']:6.2f}   target <= 5.00  "
          f"{'OK' if med['noop'] <= 5 else 'MISSED'}   (runs: {', '.join(f'{t:.2f}' for t in figures['noop'])})")
    if "cold" in med:
        print(f"  cold rollout, images present on the hosts   {med['cold']:6.2f}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--runs", type=int, default=2, help="repetitions; the median is reported")
    parser.add_argument("--idle-seconds", type=float, default=20, help="window of the idle measurement (0: skip)")
    parser.add_argument("--wipe", action="store_true",
                        help="the environment is deployed and its data may go: delete it, and leave it removed "
                             "(with --env multi: ci's, the single-host figures')")
    parser.add_argument("--short", action="store_true", help="one run, no idle window (a check that the bench works)")
    args = parser.parse_args()
    if args.short:
        args.runs, args.idle_seconds = 1, 0
    on_one_host = all(h.connect == "@local" for h in load_environment(REPO, args.env, dict(os.environ)).hosts)
    if on_one_host:
        single_host(args.env, args.runs, args.idle_seconds, args.wipe)
        return
    single = None if args.short else single_host("ci", args.runs, 0, args.wipe)
    multi = several_hosts(args.env, args.runs, args.short)
    if single is None:
        print("  (--short: no single-host figures beside them)")
        return
    print(f"  beside ci's single-host cold rollout of the same run ({single['cold']:.2f} s):")
    for name, figure in (("first deploy", multi["first"]), ("cold, images present", multi["cold"])):
        ratio = figure / single["cold"]
        print(f"  {name + ' / single-host cold':42}  {ratio:6.2f}x  target <= 1.50  {'OK' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
