"""What a benchmark may do to the environment it measures (every bench under tests/bench/).

The rule, in each bench's docstring and `--help`:

- **A real environment is refused.** An environment is real when its secrets are not
  throw-away: ``secrets.generate_missing`` is false in its inventory (``production``). Local and
  CI environments generate theirs on this machine; only those are benchmarked. There is no flag
  to override it: a benchmark stops, starts, fails over and pauses what it measures.
- **An environment the bench did not create is left as it was found**: found rolled out and
  running, it stays rolled out with its data, and what the bench changed in it is put back
  (each bench says what); found deployed but stopped, it is stopped again (data kept); found
  not deployed, the bench created it and removes it with its data (`make down VOLUMES=1`).
- **A bench that must delete the data** (bench-rollout: cold rollouts start from nothing)
  refuses an environment it finds deployed unless told it may (``--wipe``; `make ... WIPE=1`);
  it then ends with the environment removed.

Single-host (@local) environments, like the drills.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shipyard import commands

REPO = Path(__file__).resolve().parents[2]

RULE = ("refuses a real environment (secrets.generate_missing false, like production); leaves one it did not "
        "create as it found it (rolled out, data kept, its changes put back), removes one it created")


def refuse_real(settings, bench: str) -> None:
    """Stop here when ``settings`` is a real environment (see the module's rule)."""
    if not settings.secrets.generate_missing:
        sys.exit(f"{bench}: environment {settings.name} (inventories/{settings.name}.py: secrets.generate_missing "
                 f"is false): a real environment, which a benchmark does not touch\n"
                 f"  fix: benchmark a throw-away environment such as ENV=local or ENV=ci")


@dataclass(frozen=True)
class Found:
    """The environment as the bench found it."""

    env: str
    deployed: bool  # its compose project is on the host (data may be in its volumes)
    running: bool  # containers of it run

    def describe(self) -> str:
        return ("rolled out and running" if self.running else "deployed, stopped" if self.deployed
                else "not deployed")


def found(settings) -> Found:
    project_dir = Path(commands.project_dir(settings.deploy_root, settings.name))
    # An engine that does not answer runs nothing (a fresh machine: the rollout starts it).
    ps = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={settings.compose_project}"],
                        capture_output=True, text=True)
    return Found(settings.name, (project_dir / "compose.yaml").exists(), ps.returncode == 0 and bool(ps.stdout.split()))


def roll_out(env: str, bench: str) -> None:
    """`make up ENV=env` (what every bench measures is the environment as rolled out); a failed
    rollout stops the bench with its output's tail."""
    up = subprocess.run([sys.executable, "-m", "shipyard", "up", "--env", env], cwd=REPO, capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit(f"{bench}: rollout of {env} failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")


def leave_argv(was: Found) -> list[str] | None:
    """The command that puts the environment back as it was found (None: leave it running)."""
    if not was.deployed:
        return down_argv(was.env, volumes=True)  # the bench created it: removed, data and all
    if not was.running:
        return down_argv(was.env, volumes=False)  # stopped again, its data kept
    return None


def down_argv(env: str, volumes: bool) -> list[str]:
    """`make down ENV=env [VOLUMES=1]` (with volumes, the project dir and its release state go too)."""
    return [sys.executable, "-m", "shipyard", "down", "--env", env, *(["--volumes"] if volumes else [])]


def _run(argv: list[str], env: str, bench: str, what: str) -> bool:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{bench}: could not leave {env} {what}: `{' '.join(argv[1:])}` failed:\n"
              f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}", file=sys.stderr)
        return False
    print(f"{bench}: {env} left {what}")
    return True


def leave_as_found(was: Found, bench: str) -> bool:
    """Put the environment back as it was found (a bench undoes its own changes first); False
    when that failed (the bench then fails)."""
    argv = leave_argv(was)
    what = f"as it was found ({was.describe()})"
    if argv is None:
        print(f"{bench}: {was.env} left {what}")
        return True
    return _run(argv, was.env, bench, what)


def remove(env: str, bench: str) -> bool:
    """`make down VOLUMES=1`: what a bench that deleted the data (--wipe) ends with."""
    return _run(down_argv(env, volumes=True), env, bench, "removed (down --volumes)")


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat's first line)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def wait_quiet(bench: str, busy_below: float = 0.25, samples: int = 2, timeout_s: float = 120) -> bool:
    """Wait until the machine was less than ``busy_below`` busy for ``samples`` seconds in a row:
    what one measuring window set going (tasks still being processed, lines still being indexed)
    has ended before the next starts. An idle environment's probes stay well under it. False
    (and a line saying so) if it did not go quiet within ``timeout_s``: something else runs on
    the machine, and the figures that follow carry its load."""
    started, quiet = time.monotonic(), 0
    before = _cpu_times()
    while quiet < samples:
        if time.monotonic() - started > timeout_s:
            print(f"{bench}: the machine did not go quiet (under {busy_below:.0%} busy for {samples} s) within "
                  f"{timeout_s:.0f} s (last second {share:.0%} busy): going on; something else runs on it",
                  file=sys.stderr)
            return False
        time.sleep(1)
        after = _cpu_times()
        busy, total = after[0] - before[0], after[1] - before[1]
        share = busy / total if total else 0.0
        quiet = quiet + 1 if share < busy_below else 0
        before = after
    return True
