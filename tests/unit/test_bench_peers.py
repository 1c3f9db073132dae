"""`make bench-peers` (services/bench/bench_peers.py, issue 23) without running it: its figures
and goals, the peers' pins and venv, the one interface every peer's module implements, and
the process tree a kill -9 or a stop reaches."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "services" / "bench"
sys.path.insert(0, str(BENCH))

from peers import figures, proctree, venv  # noqa: E402
from peers.driver import SYSTEMS  # noqa: E402


def system(submit_per_s, drain_per_s, p50, p95, *, survived=True, tasks=100, drained=100, errors=0) -> dict:
    return {"submit": {"tasks": tasks, "errors": errors, "per_s": submit_per_s},
            "drain": {"done": drained, "per_s": drain_per_s},
            "latency": {"p50_ms": p50, "p95_ms": p95},
            "survival": figures.survival_figures(4, 1, {"succeeded": 4 if survived else 3, "failed": 0,
                                                           "pending": 0 if survived else 1, "ran_again": 1},
                                                 2.0 if survived else None, 20)}


def goals_met(results: dict) -> dict[str, bool]:
    return {text.split(":")[0].split(" (")[0]: met for text, met in figures.goals(results)}


def test_the_goals_pass_when_shipyard_leads_and_keeps_its_guarantees():
    results = {"shipyard": system(600, 1500, 4.0, 8.0), "celery": system(1100, 900, 5.0, 9.0),
               "rq": system(1200, 100, 9.0, 20.0, survived=False)}
    assert all(goals_met(results).values())


@pytest.mark.parametrize("shipyard,missed", [
    (system(600, 800, 4.0, 8.0), "Shipyard's drain rate at or ahead of every peer's"),
    (system(600, 1500, 4.0, 9.5), "Shipyard's latency p50 and p95 at or below every peer's"),
    (system(500, 1500, 4.0, 8.0), "Shipyard's submit rate within 2x of the fastest peer's"),
    (system(600, 1500, 4.0, 8.0, survived=False), "every acknowledged task ends after a worker's kill -9"),
    (system(600, 1500, 4.0, 8.0, drained=99), "durable rows"),
])
def test_each_goal_is_missed_on_its_own(shipyard, missed):
    met = goals_met({"shipyard": shipyard, "celery": system(1100, 900, 5.0, 9.0)})
    assert [text for text, ok in met.items() if not ok] == [missed]


def test_the_figures_of_the_phases():
    clients = [{"count": 50, "errors": 0, "started": 100.0, "finished": 101.0},
               {"count": 49, "errors": 1, "started": 100.5, "finished": 102.0}]
    assert figures.submit_figures(clients) == {"clients": 2, "tasks": 99, "errors": 1, "seconds": 2.0, "per_s": 49.5}
    drain = figures.drain_figures(101, 10.0, {"done": 101, "first_done": 11.0, "last_done": 13.0, "observed_at": 13.5})
    assert drain == {"backlog": 101, "done": 101, "per_s": 50.0, "startup_s": 1.0, "wall_s": 3.5}
    latency = figures.latency_figures(50, 2, {"sent": 100, "latencies_ms": [float(n) for n in range(1, 101)],
                                              "failed": 0, "pending": 0, "max_schedule_lag_ms": 1.0})
    assert (latency["p50_ms"], latency["p95_ms"], latency["done"]) == (51.0, 96.0, 100)


def test_the_table_and_the_ratios_name_every_system():
    results = {"shipyard": system(600, 1500, 4.0, 8.0), "arq": system(1200, 750, 8.0, 8.0, survived=False)}
    table = "\n".join(figures.table(results))
    assert re.search(r"drain/s \(2 workers\)\s+1,500\s+750", table)
    assert re.search(r"kill -9 survived\s+yes 2 s\s+not in 20 s", table)
    ratios = "\n".join(figures.ratio_lines(results))
    assert "submit/s (8 clients)     Shipyard/peer: arq 0.50" in ratios and "latency p50 ms" in ratios
    assert figures.ratio(1.0, None) is None and figures.ratio(1.0, 0) is None


@pytest.mark.parametrize("killed,ended,cell", [
    (False, {"succeeded": 4, "failed": 0, "pending": 0}, "not tested"),
    (True, {"succeeded": 4, "failed": 0, "pending": 0}, "yes 3 s"),
    (True, {"succeeded": 3, "failed": 1, "pending": 0}, "NO 1 failed"),
    (True, {"succeeded": 3, "failed": 0, "pending": 1}, "not in 20 s"),
])
def test_a_survival_says_whether_tested_and_how_it_ended(killed, ended, cell):
    survival = figures.survival_figures(4, 2 if killed else None, dict(ended, ran_again=0), 3.2, 20)
    assert figures.survival_cell(survival) == cell


def test_the_detail_says_how_the_kill_ended():
    ended = figures.survival_figures(4, 2, {"succeeded": 3, "failed": 0, "pending": 1, "ran_again": 0}, 2.0, 20)
    lines = figures.detail_lines("rq", dict(system(1, 1, 1.0, 1.0), survival=ended, latency={
        "sent": 10, "done": 10, "failed": 0, "pending": 0, "p99_ms": 3.0, "max_schedule_lag_ms": 0.5},
        submit={"tasks": 10, "errors": 0, "seconds": 1.0}, drain={
        "done": 10, "backlog": 10, "startup_s": 0.5, "wall_s": 2.0}))
    assert lines[0].startswith("  rq: submit 10 in 1.00 s (0 errors); drain 10/10")
    assert lines[1] == ("    kill -9: 4 acknowledged, the killed worker held 2; succeeded 3, failed 0, ran twice or "
                        "more 0; 1 not ended 20 s after the kill")


def test_the_peers_are_pinned_exactly_and_stay_out_of_the_project_requirements():
    lines = [l for l in (BENCH / "peers-requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", l) for l in lines), lines
    pinned = {l.split("==")[0].lower() for l in lines}
    assert {"celery", "arq", "rq", "redis", "sqlalchemy", "psycopg"} <= pinned
    for requirements in [REPO / "requirements.txt", *REPO.glob("services/requirements*.txt")]:
        names = {re.split(r"[=<>\[ ;]", l, maxsplit=1)[0].lower() for l in requirements.read_text().splitlines()}
        assert not names & {"celery", "arq", "rq"}, f"{requirements.name}: the peers belong to the bench's own venv"


def test_the_venv_is_made_again_when_the_pins_or_the_python_change():
    assert venv.stamp("celery==5.6.3\n", "3.11.7") == venv.stamp("celery==5.6.3\n", "3.11.7")
    assert venv.stamp("celery==5.6.3\n", "3.11.7") != venv.stamp("celery==5.6.2\n", "3.11.7")
    assert venv.stamp("celery==5.6.3\n", "3.11.7") != venv.stamp("celery==5.6.3\n", "3.12.1")


ADAPTER_METHODS = {"prepare", "run_worker", "connect", "submit", "submit_slow", "count_done", "done_span", "outcomes"}


def _classes(path: Path) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_system_s_module_implements_the_driver_s_interface(name):
    """Read, not imported: a peer's module imports its library, which only the peers' venv has.
    An adapter's methods are its own and those of the bases ``peers/`` defines."""
    shared = {k: v for path in (BENCH / "peers").glob("*.py") if not path.name.endswith("_peer.py")
              for k, v in _classes(path).items()}
    adapter = _classes(BENCH / "peers" / f"{name}_peer.py")["Adapter"]
    bodies = [adapter.body, *(shared[b.id].body for b in adapter.bases if isinstance(b, ast.Name))]
    assert ADAPTER_METHODS <= {f.name for body in bodies for f in body if isinstance(f, ast.FunctionDef)}


def test_the_process_tree_reaches_a_grandchild_and_spares_a_pid_taken_again(tmp_path):
    # A child that starts a grandchild in a process group of its own, as RQ does its work-horse.
    script = "import os, subprocess, time; subprocess.Popen(['sleep', '30'], preexec_fn=os.setpgrp); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while len(members := proctree.tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(members) == 2 and members[0].pid == child.pid
        grandchild = members[1]
        assert proctree.ancestor_among(grandchild.pid, {child.pid}) == child.pid
        assert proctree.ancestor_among(grandchild.pid, {12345678}) is None
        proctree.signal_alive([proctree.Process(grandchild.pid, grandchild.started + 1)], signal.SIGKILL)
        assert proctree.tree(child.pid) == members, "another process's start time: left alone"
        proctree.signal_alive(members, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
