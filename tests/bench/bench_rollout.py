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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--runs", type=int, default=2, help="repetitions; the median is reported")
    parser.add_argument("--idle-seconds", type=float, default=20, help="window of the idle measurement (0: skip)")
    parser.add_argument("--wipe", action="store_true",
                        help="the environment is deployed and its data may go: delete it, and leave it removed")
    parser.add_argument("--short", action="store_true", help="one run, no idle window (a check that the bench works)")
    args = parser.parse_args()
    if args.short:
        args.runs, args.idle_seconds = 1, 0
    # Plain compose cannot run a live setup between two steps (Vault's, which hands the API and
    # workers what they log in with under secrets.backend vault): both sides run the files
    # backend, so that they start the same services the same way. Said in the output.
    os.environ["SHIPYARD_SECRETS__BACKEND"] = "age"
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-rollout")
    was = benchenv.found(settings)
    if was.deployed and not args.wipe:
        sys.exit(f"bench-rollout: environment {args.env} is {was.describe()}: its cold rollouts delete its data\n"
                 f"  fix: remove it first if its data may go (make down ENV={args.env} VOLUMES=1), or say so: "
                 f"make bench-rollout WIPE=1 (--wipe)")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    project = settings.compose_project
    shipyard_up = [sys.executable, "-m", "shipyard", "up", "--env", args.env]

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
        for _ in range(args.runs):
            down()
            figures["cold"].append(timed(shipyard_up))
            figures["noop"].append(timed(shipyard_up))
            down()
            figures["plain_cold"].append(plain_up())
            figures["plain_noop"].append(plain_up())
        idle = ""
        if args.idle_seconds:
            down()
            timed(shipyard_up)
            idle = subprocess.run([sys.executable, str(REPO / "tests/bench/bench_idle.py"), "--env", args.env,
                                   "--seconds", str(args.idle_seconds)], cwd=REPO, capture_output=True, text=True).stdout
    finally:
        # Like `make down VOLUMES=1`: the project dir (and the secrets it records) goes too. Found
        # not deployed, that is as it was found; found deployed, --wipe said its data may go.
        removed = benchenv.remove(args.env, "bench-rollout")
    if not removed:
        sys.exit(1)

    med = {k: sorted(v)[len(v) // 2] for k, v in figures.items()}
    print(f"bench-rollout env={args.env} runs={args.runs} (median seconds; secrets.backend age on both sides: "
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


if __name__ == "__main__":
    main()
