"""`make bench-secrets`: seconds from `make secrets-rotate` to every reader using the new value,
under light task traffic, with Vault serving the API and workers (secrets.backend vault).

- Each rotation is the operator's command (``python -m shipyard secrets-rotate``), timed whole:
  new value, servers take it live, Vault's copies written, every running reader holding them
  (the rollout waits on each container's ``held.json``: its own figure, printed by the rollout,
  is read here), the old value dropped.
- The floor, in the same run: a no-op `make up` (the rollout a rotation rides on, with nothing
  to change) — a rotation's own cost is the difference.
- The traffic (~10 creates/s through the edge) must see no failed request, and every accepted
  task must run.
Rotates redis_password, jwt_signing_key and consul_token_api 3 times each (--short: the first
two once, for `make test`). Loopback only, bounded.

The environment (tests/bench/benchenv.py): a real one is refused; its secrets are rotated (what
is measured; a throw-away environment's secrets are generated on this machine anyway); one the
bench created is removed (`make down VOLUMES=1`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard.inventory import load_environment  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import Traffic, api_client, wait_all_processed  # noqa: E402

SECRETS = ("redis_password", "jwt_signing_key", "consul_token_api")
# The rollout's own line (shipyard/components/vault/readers.py): how long the readers took.
READERS = re.compile(r"hold the new .* after (\d+(?:\.\d+)?)s")


def _shipyard(*argv: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shipyard", *argv], cwd=REPO, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"bench-secrets: `{' '.join(argv)}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return took, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="redis_password and jwt_signing_key once each")
    args = parser.parse_args()
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-secrets")
    if settings.secrets.backend != "vault":
        sys.exit(f"bench-secrets: {args.env}'s secrets.backend is {settings.secrets.backend!r}: this bench measures "
                 f"rotation through Vault\n  fix: ENV=ci (secrets.backend vault), or migrate: make secrets-migrate "
                 f"ENV={args.env} TO=vault")
    names, rounds = (SECRETS[:2], 1) if args.short else (SECRETS, args.rounds)
    was = benchenv.found(settings)
    took: dict[str, list[float]] = {name: [] for name in names}
    readers: dict[str, list[float]] = {name: [] for name in names}
    try:
        benchenv.roll_out(args.env, "bench-secrets")
        floor = [_shipyard("up", "--env", args.env)[0] for _ in range(rounds)]
        client = api_client(settings, "bench-secrets")
        with Traffic(client, interval_s=0.1) as traffic:
            for _ in range(rounds):
                for name in names:
                    seconds, out = _shipyard("secrets-rotate", "--env", args.env, "--name", name)
                    took[name].append(seconds)
                    found = READERS.search(out)
                    if not found:
                        sys.exit(f"bench-secrets: the rollout after rotating {name} did not say when the readers "
                                 f"held it:\n{out[-3000:]}")
                    readers[name].append(float(found.group(1)))
        counts = wait_all_processed(client, traffic.accepted)
    finally:
        left = benchenv.leave_as_found(was, "bench-secrets")
    if not left:
        sys.exit(1)
    base = statistics.median(floor)
    print(f"bench-secrets env={args.env}: {sum(len(v) for v in took.values())} rotations under light traffic "
          f"({counts['accepted']} tasks accepted, {counts['processed']} run, {traffic.refused} requests failed); "
          f"Vault's KV poll {settings.vault.kv_poll_s:g} s")
    print(f"  floor: a no-op `make up` {base:.1f} s (median of {len(floor)})")
    for name in names:
        command, wait = statistics.median(took[name]), statistics.median(readers[name])
        print(f"  {name}: `make secrets-rotate` to done {command:.1f} s (median of {len(took[name])}; "
              f"{command / base:.1f}x the no-op rollout), of which every reader on the new value {wait:.1f} s "
              f"after Vault had it")
    ok = traffic.refused == 0 and counts["processed"] == counts["accepted"]
    print(f"  requests failed during rotations: {traffic.refused} (goal 0); accepted == run: "
          f"{counts['accepted'] == counts['processed']}: {'PASS' if ok else 'MISSED'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
