"""The audit trail of the rolled-out environment: the deploy that created its containers is on
record on its host, ok, from this checkout's commit, and `make audit` shows it; a command refused
after its settings loaded is recorded with its exit code and error (in a deploy root of the test's
own, so the environment is not touched)."""

import datetime as dt
import json
import stat
import subprocess
from pathlib import Path

from shipyard import audit
from shipyard.controller import audit_log
from shipyard.inventory import load_environment

from .conftest import REPO, run_shipyard


def _created(project: str) -> list[float]:
    """When each container of the compose project was created (unix seconds)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert ids, f"no container of {project}: is it rolled out?"
    out = subprocess.run(["docker", "inspect", "--format", "{{.Created}}", *ids], capture_output=True, text=True,
                         check=True).stdout.split()
    return [dt.datetime.fromisoformat(t[:26].rstrip("Z") + "+00:00").timestamp() for t in out]


def test_the_deploy_that_created_the_environment_is_on_record(env_name):
    """`make test-e2e` starts from nothing (down VOLUMES=1): its first `make up` created the
    oldest container. An `up` event whose run spans that moment is the one; an event of an
    earlier session cannot, since its containers are gone."""
    settings = load_environment(REPO, env_name)
    events, problems = audit_log.read(settings)
    assert not problems, problems
    first_created = min(_created(settings.compose_project))
    covering = [e for e in events if e.command == "up" and e.env == env_name
                and e.started - 1 <= first_created <= e.started + e.duration_s + 1]
    assert covering, (f"no `up` event spans {first_created} (the oldest container's creation); "
                      f"events: {[(e.command, e.started, e.duration_s, e.result) for e in events]}")
    finished = [e for e in covering if e.result == "ok"]  # a deploy refused meanwhile (the lock) spans it too
    assert finished, f"the `up` that created the containers is not recorded ok: {covering}"
    event = finished[-1]
    assert (event.exit_code, event.error) == (0, ""), event
    assert event.commit == audit_log.checkout(REPO).commit and event.user and event.machine, event
    path = Path(audit.audit_log_path(settings.deploy_root, env_name))
    assert stat.S_IMODE(path.stat().st_mode) == audit.LOG_MODE
    shown = run_shipyard("audit", "--env", env_name, "--last", "1000")
    assert shown.returncode == 0, shown.stderr
    started = dt.datetime.fromtimestamp(event.started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert any(line.startswith(started) and " up " in line and line.endswith(" ok") for line in shown.stdout.splitlines()), \
        shown.stdout


def test_a_refused_command_is_recorded_with_its_exit_code_and_error(env_name, tmp_path):
    """pg-promote of a node the environment does not have: refused before any lock or container,
    recorded all the same (in this test's deploy root: the environment's own is left alone)."""
    root = {"SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")}
    refused = run_shipyard("pg-promote", "--env", env_name, "--replica", "no-such-node", env_extra=root)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [event] = [json.loads(line) for line in (tmp_path / "root" / f".{env_name}.audit.log").read_text().splitlines()]
    assert (event["command"], event["result"], event["exit_code"]) == ("pg-promote", "failed", 2)
    assert event["options"] == {"force": False, "replica": "no-such-node", "to": None}
    assert event["error"] == f"environment {env_name}: has no PostgreSQL node 'no-such-node'"
    shown = run_shipyard("audit", "--env", env_name, env_extra=root)
    assert "pg-promote --replica=no-such-node" in shown.stdout and "FAILED (exit 2)" in shown.stdout, shown.stdout
