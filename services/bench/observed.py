"""bench-api's observability phase: create-task throughput and p95 with a real Prometheus
scraping the API against the same load with nothing scraping it, in one run (issue 19's target:
throughput ratio >= 0.95).

The scraper is the host's Prometheus server (Debian's, installed by `make host-test-tools`),
scraping the API's /metrics every second: five times `ci`'s interval and fifteen times a real
environment's, so the cost shows if there is one. It runs on the same two CPUs as the API and
the load, as it does on a one-host environment; its own CPU seconds are printed. The rounds
alternate (off, on, on, off: ABBA) so that drift of the machine over the run falls on both.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

SCRAPE_INTERVAL_S = 1


@contextmanager
def scraping(api_url: str, port: int) -> Iterator[Callable[[], float]]:
    """A Prometheus server scraping ``api_url``/metrics on 127.0.0.1:``port``. Yields two
    functions: how many scrapes it has made so far, and the CPU seconds it has used."""
    with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        target = api_url.removeprefix("http://").rstrip("/")
        config.write_text(f"global: {{scrape_interval: {SCRAPE_INTERVAL_S}s, evaluation_interval: 60s}}\n"
                          f"scrape_configs:\n  - job_name: api\n    static_configs: [{{targets: ['{target}']}}]\n")
        server = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                   f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        query = f"http://127.0.0.1:{port}/api/v1/query"

        def scrapes() -> float:
            result = requests.get(query, params={"query": 'count_over_time(up{job="api"}[1h])'},
                                  timeout=5).json()["data"]["result"]
            return float(result[0]["value"][1]) if result else 0.0

        try:
            _wait_for_first_scrape(server, query)
            yield scrapes, lambda: _cpu_seconds(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_for_first_scrape(server: subprocess.Popen, query: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bench-api: prometheus exited {server.returncode}:\n{server.stderr.read().decode()[-2000:]}")
        try:
            up = requests.get(query, params={"query": 'up{job="api"}'}, timeout=2).json()["data"]["result"]
            if up and up[0]["value"][1] == "1":
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.2)
    raise SystemExit(f"bench-api: prometheus did not scrape the API within {timeout_s:.0f}s")


def compare(run_load: Callable[[], dict], api_url: str, port: int) -> dict:
    """ABBA rounds of ``run_load`` (a wrk run: rps, p95_ms, errors, non2xx) without and with a
    scraper. Returns both sides' summed figures and the ratios."""
    off, on = [], []
    scraped = scraper_cpu_s = 0.0
    for side in ("off", "on", "on", "off"):
        if side == "off":
            off.append(run_load())
            continue
        with scraping(api_url, port) as (scrapes, cpu_seconds):
            before, cpu_before = scrapes(), cpu_seconds()
            on.append(run_load())
            scraped += scrapes() - before
            scraper_cpu_s += cpu_seconds() - cpu_before
    if scraped < 1:
        raise SystemExit("bench-api: the scraper made no scrape during its rounds: the comparison would be void")

    def side(runs: list[dict]) -> dict:
        return {"rps": sum(r["rps"] for r in runs) / len(runs), "p95_ms": max(r["p95_ms"] for r in runs),
                "failed": sum(r["errors"] + r["non2xx"] for r in runs)}

    result = {"off": side(off), "on": side(on), "scrapes": scraped, "scraper_cpu_s": scraper_cpu_s}
    result["rps_ratio"] = result["on"]["rps"] / result["off"]["rps"]
    result["p95_ratio"] = result["on"]["p95_ms"] / result["off"]["p95_ms"]
    return result


def print_comparison(obs: dict, seconds: int) -> bool:
    """Prints the phase; True when its target is met."""
    met = obs["rps_ratio"] >= 0.95 and obs["on"]["failed"] == obs["off"]["failed"] == 0
    print(f"  observability (ABBA, 2 x {seconds}s a side; Prometheus scraping the API every {SCRAPE_INTERVAL_S}s, "
          f"{obs['scrapes']:.0f} scrapes, the scraper's own CPU {obs['scraper_cpu_s']:.2f} s)")
    for name in ("off", "on"):
        figures = obs[name]
        print(f"    scraped {name:3}  {figures['rps']:8.0f} req/s  p95 {figures['p95_ms']:6.1f} ms  "
              f"failed {figures['failed']}")
    print(f"    ratio on/off: throughput {obs['rps_ratio']:.3f} (target >= 0.95: {'MET' if met else 'MISSED'}), "
          f"p95 {obs['p95_ratio']:.2f}")
    return met
