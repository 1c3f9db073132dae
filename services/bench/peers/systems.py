"""The bench's side of each system: its worker processes (started, found busy, killed -9,
stopped) and the client commands it runs in the peers' venv (``peers/driver.py``). Shipyard's
workers are the platform's (``taskplatform_testing.servers``); a peer's are ``peers.driver
<peer> worker`` processes. Every worker starts in a session of its own, and a kill -9 or a stop
reaches the worker and every process it started (Celery's pool, RQ's work-horse: ``proctree``),
nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families

from peers import proctree
from taskplatform_testing.servers import Platform, Redis, free_port

BENCH_DIR = Path(__file__).resolve().parents[1]  # services/bench: the driver runs as `-m peers.driver`
STOP_GRACE_S = 10


class System:
    """What the bench does the same way with every system: run the driver's commands."""

    name: str

    def __init__(self, python: Path, root: Path, env: dict[str, str]):
        self.python, self.root = python, root
        self.env = dict(os.environ, PYTHONPATH=str(BENCH_DIR), **env)
        self.root.mkdir(parents=True, exist_ok=True)
        self.drivers: list[subprocess.Popen] = []  # ended ones too: a stop ends what is left

    def spawn_driver(self, command: str, *options: str, stdin: int | None = None) -> subprocess.Popen:
        driver = subprocess.Popen([str(self.python), "-m", "peers.driver", self.name, command, *options],
                                  env=self.env, cwd=BENCH_DIR, stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.drivers.append(driver)
        return driver

    def driver(self, command: str, *options: str, timeout: float) -> dict:
        return reply(self.name, command, self.spawn_driver(command, *options), timeout)

    def start_worker(self) -> subprocess.Popen:
        raise NotImplementedError

    def busy_workers(self, marker_file: Path) -> dict[subprocess.Popen, int]:
        """The workers that have tasks running now, and how many each."""
        raise NotImplementedError

    def kill(self, worker: subprocess.Popen) -> None:
        """kill -9 of the worker and of every process it started, at once (as the kernel's OOM
        killer or a container's end takes a worker and its children)."""
        proctree.signal_alive(proctree.tree(worker.pid), signal.SIGKILL)
        worker.wait(10)
        self.forget(worker)

    def forget(self, worker: subprocess.Popen) -> None:
        raise NotImplementedError

    def stop_workers(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """The workers, and the client commands still running (a run that stopped half-way)."""
        try:
            self.stop_workers()
        finally:
            for driver in self.drivers:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait(5)


def reply(system: str, command: str, process: subprocess.Popen, timeout: float) -> dict:
    """The ``PEERS_JSON`` line a driver process printed last; exits the bench when there is none
    (the bench could not measure)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
    line = next((l for l in reversed(out.splitlines()) if l.startswith("PEERS_JSON ")), None)
    if line is None:
        raise SystemExit(f"bench-peers: {system} {command} printed no result (exit {process.returncode}):\n"
                         f"{out[-2000:]}\n{err[-4000:]}")
    return json.loads(line.split(" ", 1)[1])


class PeerSystem(System):
    """Celery, arq or RQ: a Redis server of its own (the same binary and settings as Shipyard's),
    workers run by the driver."""

    def __init__(self, name: str, python: Path, root: Path, env: dict[str, str]):
        self.name = name
        self.redis = Redis(root / "redis").start()
        super().__init__(python, root, dict(env, PEER_REDIS_URL=f"redis://:{self.redis.password}@127.0.0.1:"
                                                                 f"{self.redis.port}/0"))
        self.workers: list[subprocess.Popen] = []

    def start_worker(self) -> subprocess.Popen:
        name = secrets.token_hex(3)
        with open(self.root / f"worker-{name}.log", "wb") as log:
            worker = subprocess.Popen([str(self.python), "-m", "peers.driver", self.name, "worker", "--name", name],
                                      env=self.env, cwd=BENCH_DIR, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.workers.append(worker)
        return worker

    def busy_workers(self, marker_file: Path) -> dict[subprocess.Popen, int]:
        """From the slow tasks' own marks: which process runs each one, and which worker started
        that process (a work-horse or pool process is a child of its worker)."""
        running: dict[str, int] = {}  # task index -> the pid that started it, while it has not ended
        for line in marker_file.read_text().splitlines() if marker_file.exists() else []:
            event, index, pid = line.split()
            if event == "start":
                running[index] = int(pid)
            else:
                running.pop(index, None)
        alive = {w.pid: w for w in self.workers if w.poll() is None}
        busy: dict[subprocess.Popen, int] = {}
        for pid in running.values():
            if (owner := proctree.ancestor_among(pid, set(alive))) is not None:
                busy[alive[owner]] = busy.get(alive[owner], 0) + 1
        return busy

    def forget(self, worker: subprocess.Popen) -> None:
        self.workers.remove(worker)

    def stop_workers(self) -> None:
        stop_sessions(self.workers)
        self.workers.clear()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.redis.stop()


class ShipyardSystem(System):
    """The platform's API (started by the bench) and its real workers; the driver is its
    client."""

    name = "shipyard"

    def __init__(self, platform: Platform, python: Path, env: dict[str, str]):
        super().__init__(python, platform.root / "bench-peers", env)
        self.platform = platform

    def start_worker(self) -> subprocess.Popen:
        port = free_port()
        worker = self.platform.start_worker(TASKS_WORKER_METRICS_PORT=port)
        worker.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return worker

    @property
    def workers(self) -> list[subprocess.Popen]:
        return [p for p in self.platform.processes if p.args[-1] == "worker"]

    def busy_workers(self, marker_file: Path) -> dict[subprocess.Popen, int]:
        """From each worker's own gauge (the platform's sleep kind marks nothing)."""
        running = {w: int(_tasks_running(w.metrics_url)) for w in self.workers if w.poll() is None}
        return {w: n for w, n in running.items() if n > 0}

    def forget(self, worker: subprocess.Popen) -> None:
        self.platform.processes.remove(worker)

    def stop_workers(self) -> None:
        self.platform.stop_workers()


def _tasks_running(metrics_url: str) -> float:
    """The worker's own gauge; 0 while its metrics server is not up yet."""
    try:
        text = urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "worker_tasks_running")


def stop_sessions(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process's group (a worker's warm shutdown); then SIGKILL to whatever of it
    is left (a worker still there after STOP_GRACE_S, a pool process or work-horse it left
    behind)."""
    trees = {process: proctree.tree(process.pid) for process in processes if process.poll() is None}
    for process in trees:
        os.killpg(process.pid, signal.SIGTERM)
    for process, members in trees.items():
        _exited_unreaped(process.pid, STOP_GRACE_S)
        # Not reaped yet, the worker's pid still names it: no other process can have taken it.
        proctree.signal_alive(members, signal.SIGKILL)
    for process in processes:
        process.wait(5)


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exited within ``timeout``, leaving it unreaped (a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.05)
    return False
