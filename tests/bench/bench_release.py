"""`make bench-release`: a blue-green release and a rollback under a steady 200 requests/s of
users (creates and reads, through the edge), against an in-place recreate of the API under the
same load, in one run.

Prints, for the release and the rollback: requests that were not 2xx (target 0), the switch's
seconds (from the release's own step timings), the seconds from the rollback command to the
first request served by the old colour (target < 1 s), and p99 around the cutover against the
steady state's. Baseline: `docker compose up -d --force-recreate` of the live API (a deploy
without colours: its one-shot dependencies run again first) under the same load: failed requests and the seconds between its first
and last failure. Rolls out ENV first. Loopback only; bounded (SteadyLoad stops at 20000
requests per phase). --short (`make test`): 100 requests/s, 3 s of steady state and 2 s after
each cutover, a 5 s watch.

The environment (tests/bench/benchenv.py): a real one is refused; one the bench did not create
is left as it was found: the rollback puts the found version back live in the found colour,
its rate limit is set back, and the colour the bench released is removed (its version stays
the one-shots' newest and in `make releases`: its migrations ran); one it created is removed
(`make down VOLUMES=1`).
"""

from __future__ import annotations

import argparse
from collections import Counter
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard import commands  # noqa: E402
from shipyard.components.taskplatform import runtime  # noqa: E402
from shipyard.controller.releases import live_instance, read_state, write_state  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.lock import environment_lock  # noqa: E402
from shipyard.secretstore import load_or_create  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import SteadyLoad, api_client  # noqa: E402

COMPOSE_PROJECT, COMPOSE_SERVICE = "com.docker.compose.project", "com.docker.compose.service"
COLOUR = "org.shipyard.colour"  # the label of a coloured service's containers (the render's)
RATE = 200.0
STEADY_S = 10.0
AFTER_S = 5.0
WATCH_S = 10


def _shipyard(*args: str) -> str:
    env = {**os.environ, "SHIPYARD_RELEASE__WATCH_SECONDS": str(WATCH_S)}
    result = subprocess.run([sys.executable, "-m", "shipyard", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: `shipyard {' '.join(args)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _p99_ms(load: SteadyLoad, since: float, until: float) -> float:
    values = sorted(s for t, s in load.latencies if since <= t < until)
    return values[min(len(values) - 1, int(0.99 * len(values)))] * 1000 if values else float("nan")


def _step_seconds(output: str, step: str) -> float:
    match = re.search(rf"release: {step}\s+([0-9.]+)s", output)
    return float(match.group(1)) if match else float("nan")


def _phase(settings, name: str, action) -> dict:
    """Steady load; ``action`` in the middle; figures of the cutover against the steady state."""
    with SteadyLoad(api_client(settings), rate=RATE, workers=8) as load:
        time.sleep(STEADY_S)  # the steady state this phase is compared with (a measurement, not a wait)
        started = time.monotonic()
        extra = action(load, started)
        ended = time.monotonic()
        time.sleep(AFTER_S)
    failed = load.failed(started, ended + AFTER_S)
    statuses = Counter(status for _, status, _ in failed)
    steady = _p99_ms(load, started - STEADY_S, started)
    figures = {"name": name, "requests": len(load.answers), "failed": len(failed),
               "failed_span_s": (max(t for t, _, _ in failed) - min(t for t, _, _ in failed)) if failed else 0.0,
               "p99_steady_ms": steady, "p99_cutover_ms": _p99_ms(load, started, ended + AFTER_S),
               "rate": len(load.answers) / (time.monotonic() - (started - STEADY_S)), **extra}
    print(f"bench-release: {name}: {figures['requests']} requests at {figures['rate']:.0f}/s, "
          f"{figures['failed']} not 2xx {dict(statuses) or ''} (over {figures['failed_span_s']:.2f}s), p99 steady "
          f"{steady:.1f} ms -> cutover {figures['p99_cutover_ms']:.1f} ms"
          + "".join(f", {k} {v:.2f}" for k, v in extra.items()), flush=True)
    return figures


def _put_back(settings, found_live: str, rate_limit) -> None:
    """After the rollback the found colour is live at the found version: the bench's rate limit
    set back, the colour it released removed (containers and state)."""
    _shipyard("config-set", "--env", settings.name, "--key", "rate_limit_per_minute", "--value", str(rate_limit))
    state = read_state(settings)
    if state.live != found_live:
        raise SystemExit(f"bench: {state.live} is live after the rollback, not {found_live} as found")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    with environment_lock(REPO, settings.name):
        released = subprocess.run(["docker", "ps", "-a", "--filter", f"label={COMPOSE_PROJECT}={settings.compose_project}",
                                   "--filter", f"label={COLOUR}={state.idle}",
                                   "--format", f'{{{{.Label "{COMPOSE_SERVICE}"}}}}'],
                                  check=True, capture_output=True, text=True).stdout.split()
        if released:
            subprocess.run(commands.compose(project_dir, settings.compose_project, "rm", "--stop", "--force",
                                            *sorted(set(released))), check=True, capture_output=True)
        write_state(settings, state.without_idle())


def main() -> None:
    global RATE, STEADY_S, AFTER_S, WATCH_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--keep", action="store_true", help="leave the environment rolled out (also one it created)")
    parser.add_argument("--short", action="store_true", help="lower rate, shorter phases (a check that the bench works)")
    args = parser.parse_args()
    if args.short:
        RATE, STEADY_S, AFTER_S, WATCH_S = 100.0, 3.0, 2.0, 5
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-release")
    was = benchenv.found(settings)
    found_live = rate_limit = None
    try:
        benchenv.roll_out(args.env, "bench-release")
        found_live = read_state(settings).live
        token = load_or_create(REPO, args.env, generate_missing=False)["consul_management_token"].value
        rate_limit = runtime.current_document(settings, token)["rate_limit_per_minute"]
        # One tenant sends all the load: its rate limit (runtime config) must not be what refuses.
        _shipyard("config-set", "--env", args.env, "--key", "rate_limit_per_minute", "--value", "120000")
        version = f"bench-{time.strftime('%H%M%S')}"

        def do_release(load, started):
            out = _shipyard("release", "--env", args.env, "--version", version)
            return {"switch_s": _step_seconds(out, "switch"), "release_s": time.monotonic() - started}

        release = _phase(settings, "release", do_release)
        previous = read_state(settings)

        def do_rollback(load, started):
            _shipyard("rollback", "--env", args.env)
            back = f"{previous.idle}/{previous.versions[previous.idle]}"
            deadline = time.monotonic() + 10
            while (first := load.first_served_by(back, since=started)) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            return {"rollback_to_traffic_s": (first - started) if first else float("nan")}

        rollback = _phase(settings, "rollback", do_rollback)

        def in_place(load, started):
            project_dir = commands.project_dir(settings.deploy_root, settings.name)
            # Not --no-deps: compose drops depends_on from a service's config under it, so the
            # recreated container's config hash would differ from the deploy's and the next
            # deploy would recreate the API again (the environment not left as found).
            subprocess.run(commands.compose(project_dir, settings.compose_project, "up", "-d", "--force-recreate",
                                            "--wait", live_instance(settings, "api")),
                           check=True, capture_output=True)
            return {"recreate_s": time.monotonic() - started}

        baseline = _phase(settings, "in-place recreate (baseline)", in_place)
        print("bench-release: summary")
        def verdict(met: bool) -> str:
            return "OK" if met else "MISSED"

        print(f"  release:  {release['failed']} not 2xx (target 0: {verdict(release['failed'] == 0)}); switch "
              f"{release['switch_s']:.2f}s; p99 {release['p99_cutover_ms']:.1f} ms vs steady {release['p99_steady_ms']:.1f} ms")
        print(f"  rollback: {rollback['failed']} not 2xx (target 0: {verdict(rollback['failed'] == 0)}); command -> "
              f"traffic on the old colour {rollback['rollback_to_traffic_s']:.2f}s "
              f"(target < 1 s: {verdict(rollback['rollback_to_traffic_s'] < 1)}); p99 {rollback['p99_cutover_ms']:.1f} ms")
        print(f"  baseline: {baseline['failed']} not 2xx over {baseline['failed_span_s']:.2f}s of errors "
              f"(in-place recreate of the API)")
    finally:
        put_back = True
        if was.deployed and rate_limit is not None:  # also after a failure: what can be put back is
            try:
                _put_back(settings, found_live, rate_limit)
            except (Exception, SystemExit) as exc:
                print(f"bench-release: could not put {args.env} back as found: {exc}", file=sys.stderr)
                put_back = False
        left = True if args.keep else benchenv.leave_as_found(was, "bench-release")
    if not (left and put_back):
        sys.exit(1)


if __name__ == "__main__":
    main()
