"""`make bench-rollout`: Shipyard's rollout against plain `docker compose up -d --wait`, in one run,
on the same rendered files and the same (already built) images.

Prints cold rollout seconds, no-op re-run seconds, the plain compose figures and the ratios,
then the idle CPU of the rolled-out stack beside them (tests/bench/bench_idle.py): the health
probes are slow once a container is up, which must not slow the rollout's gates.
Targets: no-op re-run ≤ 3 s; cold rollout ≤ 1.1× plain compose; idle ≤ 5 % of one core.
Leaves the environment removed (`make down VOLUMES=1`) when it finishes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard import commands  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="ci")
    parser.add_argument("--runs", type=int, default=2, help="repetitions; the median is reported")
    parser.add_argument("--idle-seconds", type=float, default=20, help="window of the idle measurement (0: skip)")
    args = parser.parse_args()
    settings = load_environment(REPO, args.env, dict(os.environ))
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    shipyard_up = [sys.executable, "-m", "shipyard", "up", "--env", args.env]
    down = commands.compose_down(project_dir, settings.compose_project, volumes=True)
    plain_up = commands.compose(project_dir, settings.compose_project, "up", "-d", "--wait")

    # Warm-up: engine, images and files in place, so every figure below is "images present".
    timed(shipyard_up)
    figures: dict[str, list[float]] = {k: [] for k in ("cold", "noop", "plain_cold", "plain_noop")}
    for _ in range(args.runs):
        timed(down)
        figures["cold"].append(timed(shipyard_up))
        figures["noop"].append(timed(shipyard_up))
        timed(down)
        figures["plain_cold"].append(timed(plain_up))
        figures["plain_noop"].append(timed(plain_up))
    idle = ""
    if args.idle_seconds:
        timed(down)
        timed(shipyard_up)
        idle = subprocess.run([sys.executable, str(REPO / "tests/bench/bench_idle.py"), "--env", args.env,
                               "--seconds", str(args.idle_seconds)], cwd=REPO, capture_output=True, text=True).stdout
    # Like `make down VOLUMES=1`: the project dir (and the secrets it records) goes too.
    timed([sys.executable, "-m", "shipyard", "down", "--env", args.env, "--volumes"])

    med = {k: sorted(v)[len(v) // 2] for k, v in figures.items()}
    print(f"bench-rollout env={args.env} runs={args.runs} (median seconds)")
    print(f"  shipyard cold rollout      {med['cold']:6.2f}")
    print(f"  shipyard no-op re-run      {med['noop']:6.2f}   target <= 3.00  {'OK' if med['noop'] <= 3 else 'MISSED'}")
    print(f"  plain compose cold         {med['plain_cold']:6.2f}")
    print(f"  plain compose no-op        {med['plain_noop']:6.2f}")
    ratio = med['cold'] / med['plain_cold']
    print(f"  cold ratio shipyard/plain  {ratio:6.2f}x  target <= 1.10  {'OK' if ratio <= 1.1 else 'MISSED'}")
    print(f"  no-op ratio shipyard/plain {med['noop'] / med['plain_noop']:6.2f}x")
    if idle:
        print(idle.rstrip())


if __name__ == "__main__":
    main()
