"""The benchmarks: what they may do to an environment (tests/bench/benchenv.py), their short
mode, and that `make test` runs every one of them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.inventory import load_environment
from tests.bench import benchenv
from tests.bench.bench_rollout import plain_compose_steps

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted((REPO / "tests" / "bench").glob("bench_*.py"))


def test_a_real_environment_is_refused(repo):
    with pytest.raises(SystemExit) as stop:
        benchenv.refuse_real(load_environment(repo, "production", {}), "bench-x")
    assert "real environment" in str(stop.value) and "fix: benchmark a throw-away environment" in str(stop.value)
    for env in ("local", "ci"):
        benchenv.refuse_real(load_environment(repo, env, {}), "bench-x")


@pytest.mark.parametrize("deployed,running,wanted", [
    (True, True, None),  # a user's running environment stays as it is, data and all
    (True, False, ["down", "--env", "local"]),  # stopped again, data kept
    (False, False, ["down", "--env", "local", "--volumes"]),  # the bench created it
])
def test_an_environment_is_left_as_it_was_found(deployed, running, wanted):
    argv = benchenv.leave_argv(benchenv.Found("local", deployed, running))
    assert (argv[3:] if argv else None) == wanted


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_every_bench_follows_the_rule_and_has_a_short_mode(bench):
    text = bench.read_text()
    assert "benchenv.refuse_real(settings" in text, "a real environment must be refused"
    if re.search(r'"(up|down)"|compose_down', text):  # bench-idle unpauses what it paused itself
        assert "benchenv.leave_as_found(" in text or "benchenv.remove(" in text, \
            "a bench that deploys or tears down leaves the environment as it found it"
    assert "--volumes" not in text, "only benchenv removes an environment's data (as the rule says)"
    help_text = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--short" in help_text and "A real environment is refused" in help_text


SERVICE_BENCHES = sorted((REPO / "services" / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("bench", SERVICE_BENCHES, ids=lambda p: p.name)
def test_a_bench_on_its_own_servers_has_a_target_and_a_short_mode_make_test_runs(bench):
    """The benches of services/bench/ start their own servers: `make test` runs each, short and
    timed, beside the services' tests."""
    target = "bench-" + bench.stem.removeprefix("bench_")
    makefile = (REPO / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert f"{target} SHORT=1" in test_recipe and f'echo "make test: {target} --short took' in test_recipe
    assert re.search(rf"^{target}: .*host-test-deps", makefile, re.M)
    assert f"services/bench/{bench.name} $(BENCH_SHORT)" in makefile
    help_text = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--short" in help_text


def test_make_test_runs_every_bench_once_short():
    makefile = (REPO / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "test-e2e E2E_BENCHES=1" in test_recipe
    loop = re.search(r"for bench in ([a-z ]+); do", makefile).group(1).split()
    assert sorted(f"bench_{name}.py" for name in loop) == [b.name for b in BENCHES]
    assert loop[-1] == "rollout", "bench-rollout does its own down/up cycles: it runs last"


def test_the_plain_compose_baseline_starts_the_one_shot_nothing_waits_for_on_its_own(repo):
    compose = repo / "compose" / "ci" / "ci" / "compose.yaml"
    services = ["api-blue", "worker-blue", "consul-1", "consul-agent-token", "consul-setup", "db-setup", "migrate",
                "postgres", "redis", "edge", "router"]
    gated, last = plain_compose_steps(compose, services)
    assert last == ["consul-agent-token"]  # --wait would take its exit (0) for a failure
    assert {"db-setup", "consul-setup", "migrate"} <= set(gated)  # gated by service_completed_successfully


def _machine(monkeypatch, busy_per_second):
    """benchenv's view of /proc/stat: each second (time.sleep) adds the given busy share of 100
    jiffies; time.monotonic follows the sleeps."""
    state = {"busy": 0, "total": 0, "now": 0.0}
    shares = iter(busy_per_second)

    def sleep(seconds):
        share = next(shares)
        state["busy"] += round(100 * share)
        state["total"] += 100
        state["now"] += seconds

    monkeypatch.setattr(benchenv, "_cpu_times", lambda: (state["busy"], state["total"]))
    monkeypatch.setattr(benchenv.time, "sleep", sleep)
    monkeypatch.setattr(benchenv.time, "monotonic", lambda: state["now"])
    return state


def test_a_window_waits_for_seconds_in_a_row_under_the_bound(monkeypatch):
    # A spike between two quiet seconds starts the count again.
    state = _machine(monkeypatch, [0.9, 0.1, 0.6, 0.1, 0.2, 0.9])
    assert benchenv.wait_quiet("bench-x", busy_below=0.25, samples=2) is True
    assert state["now"] == 5


def test_a_machine_that_stays_busy_is_said_and_the_bench_goes_on(monkeypatch, capsys):
    _machine(monkeypatch, [0.8] * 20)
    assert benchenv.wait_quiet("bench-x", busy_below=0.25, samples=2, timeout_s=10) is False
    assert "bench-x: the machine did not go quiet" in capsys.readouterr().err


def test_the_machine_s_cpu_times_are_read(repo):
    busy, total = benchenv._cpu_times()
    assert 0 < busy < total
