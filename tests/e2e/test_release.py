"""Blue-green releases on a rolled-out environment, under steady user traffic through the edge
(loopback only, bounded): a release and a rollback fail no request; a bad version rolls back by
itself inside its watch window; a version that does not start leaves the live colour alone.

The bad and the broken versions are images derived from the live one (a test-only fault
setting, an entrypoint that exits): the product never builds them."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import docker
import pytest

from shipyard.controller.releases import read_state
from shipyard.components.postgres.roles import primary_of
from shipyard.inventory import load_environment
from shipyard.lock import environment_lock
from tests.drill_traffic import SteadyLoad, api_client

from .conftest import REPO, container_states, run_shipyard

# Short watch windows keep the suite quick; the bad release's is long enough to see it fail.
QUICK = {"SHIPYARD_RELEASE__WATCH_SECONDS": "5"}
_VERSIONS = "/opt/taskplatform/lib/python3.11/site-packages/taskplatform/migrations/versions"
STEPS = ("lock", "start", "smoke", "switch", "drain", "watch", "record")


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


def _shipyard(*args: str, extra: dict[str, str] | None = None):
    result = run_shipyard(*args, env_extra={**QUICK, **(extra or {})})
    return result, result.stdout + result.stderr


def _said(out: str) -> str:
    """What a failed assertion shows: the release's own lines first (the failing step and why),
    which the printed logs of the failing colour would push out of a plain tail, then the tail."""
    own = [line for line in out.splitlines() if line.startswith("release:")]
    return "\n".join(own) + "\n--- tail ---\n" + out[-3000:]


def _wait_answers(load: SteadyLoad, since: float, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` answers came for requests sent after ``since`` (the traffic we judge)."""
    deadline = time.monotonic() + timeout
    while sum(1 for t, _, _ in load.answers if t >= since) < count:
        assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout}s"
        time.sleep(0.1)


def _derived_image(base: str, ref: str, lines: list[str]) -> None:
    dockerfile = "\n".join([f"FROM {base}", *lines]) + "\n"
    docker.from_env().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)


def _statuses(settings, service: str) -> list[str]:
    return [c.status for c in docker.from_env().containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={settings.compose_project}", f"com.docker.compose.service={service}"]})]


def _project_containers(settings, colour: str) -> dict[str, str]:
    return {name: state for name, state in container_states(settings.compose_project).items()
            if f"-{colour}-" in name}


def test_a_release_under_steady_load_fails_no_request_and_switches_users(env_name, settings):
    before = read_state(settings)
    version = f"e2e-{time.strftime('%H%M%S')}"
    target = before.idle
    with SteadyLoad(api_client(settings)) as load:
        _wait_answers(load, 0, 40)
        result, out = _shipyard("release", "--env", env_name, "--version", version)
        after = time.monotonic()
        _wait_answers(load, after, 40)
    assert result.returncode == 0, _said(out)
    for step in STEPS:
        assert f"release: {step}" in result.stdout, (step, result.stdout[-3000:])
    assert load.failed() == [], load.failed()[:10]
    state = read_state(settings)
    assert (state.live, state.live_version, state.idle) == (target, version, before.live)
    assert {served for t, _, served in load.answers if t >= after} == {f"{target}/{version}"}
    # The previous colour's API stays warm; its workers were drained.
    assert _statuses(settings, f"api-{before.live}") == ["running"]
    assert set(_statuses(settings, f"worker-{before.live}")) == {"exited"}
    table = run_shipyard("releases", "--env", env_name).stdout
    assert version in table and "done" in table and f"live: {target} ({version})" in table

    # Releasing the live version again does nothing.
    unchanged = container_states(settings.compose_project)
    again, out = _shipyard("release", "--env", env_name, "--version", version)
    assert again.returncode == 0 and "already live" in out, out[-2000:]
    assert container_states(settings.compose_project) == unchanged


def test_rollback_to_the_warm_colour_under_load_fails_no_request(env_name, settings):
    before = read_state(settings)
    previous = f"{before.idle}/{before.versions[before.idle]}"
    with SteadyLoad(api_client(settings)) as load:
        _wait_answers(load, 0, 40)
        asked = time.monotonic()
        result, out = _shipyard("rollback", "--env", env_name)
        after = time.monotonic()
        _wait_answers(load, after, 40)
    assert result.returncode == 0, _said(out)
    assert load.failed() == [], load.failed()[:10]
    first = load.first_served_by(previous, since=asked)
    print(f"rollback: command to the first request served by {previous}: {first - asked:.2f}s")
    state = read_state(settings)
    assert (state.live, state.live_version) == (before.idle, before.versions[before.idle])
    assert {served for t, _, served in load.answers if t >= after} == {previous}


def test_a_bad_release_rolls_back_by_itself_inside_its_watch_window(env_name, settings):
    before = read_state(settings)
    bad = f"e2e-bad-{time.strftime('%H%M%S')}"
    _derived_image(f"shipyard/taskplatform:{before.live_version}", f"shipyard/taskplatform:{bad}",
                   ["ENV TASKS_FAULT_ERROR_SHARE=0.3"])
    with SteadyLoad(api_client(settings)) as load:
        _wait_answers(load, 0, 40)
        result, out = _shipyard("release", "--env", env_name, "--version", bad, "--prebuilt",
                                extra={"SHIPYARD_RELEASE__WATCH_SECONDS": "60"})
        after = time.monotonic()
        _wait_answers(load, after, 60)
    assert result.returncode == 1, _said(out)
    assert "ROLLING BACK" in out and "error rate" in out, out[-3000:]
    # The bad answers were the bad version's own, counted and reported; after the rollback, none.
    bad_answers = load.failed(until=after)
    assert bad_answers and {served for _, _, served in bad_answers} == {f"{before.idle}/{bad}"}, bad_answers[:10]
    reported = re.search(r"since: \d+ answers, (\d+) 5xx", out)
    # What the edge saw up to the verdict; the clients saw those and the few answered until the route back.
    assert reported and 0 < int(reported.group(1)) <= len(bad_answers), (reported, len(bad_answers))
    print(f"bad release: {len(bad_answers)} failed requests seen by the clients, {reported.group(1)} counted by "
          f"the watch before its verdict")
    assert load.failed(since=after) == []
    state = read_state(settings)
    assert (state.live, state.live_version) == (before.live, before.live_version)
    assert bad not in state.versions.values()
    assert not _project_containers(settings, before.idle)  # the bad colour is gone
    table = run_shipyard("releases", "--env", env_name).stdout
    assert bad in table and "rolled back" in table


def test_a_version_that_does_not_start_leaves_the_live_colour_untouched(env_name, settings):
    before = read_state(settings)
    broken = f"e2e-broken-{time.strftime('%H%M%S')}"
    _derived_image(f"shipyard/taskplatform:{before.live_version}", f"shipyard/taskplatform:{broken}",
                   # Its API and workers exit at once; its migrations and checks run.
                   ['ENTRYPOINT ["sh", "-c", "case \\"$2\\" in api|worker) echo broken on purpose >&2; exit 3;; '
                    'esac; exec \\"$@\\"", "entrypoint"]'])
    live = _project_containers(settings, before.live)
    result, out = _shipyard("release", "--env", env_name, "--version", broken, "--prebuilt",
                            extra={"SHIPYARD_HEALTH__APP_TIMEOUT_S": "30"})
    assert result.returncode == 1, _said(out)
    assert "start FAILED" in out and "broken on purpose" in out, _said(out)
    assert _project_containers(settings, before.live) == live
    state = read_state(settings)
    assert (state.live, state.live_version, state.starting) == (before.live, before.live_version, None)
    assert state.newest == broken  # its migrations ran (its one-shots work): they stay on it
    # The environment is whole again: a deploy has nothing to change.
    up = run_shipyard("up", "--env", env_name)
    assert up.returncode == 0 and "nothing changed" in up.stdout, up.stdout[-3000:] + up.stderr[-2000:]
    assert not _project_containers(settings, before.idle)


_DROP_TOO_EARLY = '''"""drop a column the live version still reads (expand/contract: refused)"""
from alembic import op

revision = "0900"
down_revision = "{head}"
destructive = "drops tasks.error"
unused_since = "0899"


def upgrade() -> None:
    op.drop_column("tasks", "error")
'''


def test_a_destructive_migration_the_live_version_still_needs_is_refused_before_any_migration(env_name, settings):
    before = read_state(settings)
    live_image = f"shipyard/taskplatform:{before.live_version}"
    client = docker.from_env()
    chain = json.loads(client.containers.run(live_image, ["taskplatform", "migrations"], remove=True))["chain"]
    version = f"e2e-contract-{time.strftime('%H%M%S')}"
    # The live image plus one migration, as the next version would carry it.
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", f"FROM {live_image}\nCOPY 0900_drop.py {_VERSIONS}/0900_drop.py\n"),
                           ("0900_drop.py", _DROP_TOO_EARLY.format(head=chain[-1]))):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=f"shipyard/taskplatform:{version}", rm=True)
    result, out = _shipyard("release", "--env", env_name, "--version", version, "--prebuilt")
    assert result.returncode == 1, _said(out)
    assert "release refused before its migrations: migration 0900 drops tasks.error, which the live version" in out
    state = read_state(settings)
    assert (state.live, state.live_version, state.newest) == (before.live, before.live_version, before.newest)
    # Nothing ran: the column is there.
    primary = primary_of(settings)
    column = subprocess.run(["docker", "exec", f"{settings.compose_project}-{primary}-1", "bash", "-c",
                             "PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h /var/run/postgresql "
                             f"-U $PG_SUPERUSER -d {settings.postgres.database} -XAtc \"SELECT count(*) FROM "
                             "information_schema.columns WHERE table_name = 'tasks' AND column_name = 'error'\""],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert column == "1"


def test_a_release_killed_halfway_leaves_users_on_the_live_colour_and_the_next_release_recovers(env_name, settings):
    before = read_state(settings)
    target = before.idle
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_") or k == "SHIPYARD_AGE_IDENTITY_DIR"}
    with SteadyLoad(api_client(settings)) as load:
        _wait_answers(load, 0, 40)
        cut = subprocess.Popen([sys.executable, "-m", "shipyard", "release", "--env", env_name, "--version",
                                f"e2e-cut-{time.strftime('%H%M%S')}"], cwd=REPO, env={**env, **QUICK},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while not _statuses(settings, f"api-{target}") and cut.poll() is None:  # killed once the new colour exists
            assert time.monotonic() < deadline, "the release never started its colour"
            time.sleep(0.2)
        os.killpg(cut.pid, signal.SIGKILL)
        cut.wait()
        killed = time.monotonic()
        _wait_answers(load, killed, 40)
        assert load.failed() == [], load.failed()[:10]
        assert {served for t, _, served in load.answers if t >= killed} == {f"{before.live}/{before.live_version}"}
        version = f"e2e-after-cut-{time.strftime('%H%M%S')}"
        result, out = _shipyard("release", "--env", env_name, "--version", version)
        after = time.monotonic()
        _wait_answers(load, after, 40)
    assert result.returncode == 0, _said(out)
    assert load.failed() == [], load.failed()[:10]
    assert (read_state(settings).live, read_state(settings).live_version) == (target, version)


def test_a_second_release_meets_the_lock_and_changes_nothing(env_name, settings):
    before = container_states(settings.compose_project)
    with environment_lock(REPO, env_name):
        result, out = _shipyard("release", "--env", env_name, "--version", "e2e-never")
    assert result.returncode != 0 and "another deploy holds the lock" in out, out[-2000:]
    assert container_states(settings.compose_project) == before
    assert "e2e-never" not in read_state(settings).versions.values()


def test_once_the_previous_colour_is_no_longer_warm_a_deploy_removes_it_and_rollback_starts_it_first(
        env_name, settings):
    before = read_state(settings)
    version = f"e2e-cold-{time.strftime('%H%M%S')}"
    with SteadyLoad(api_client(settings)) as load:
        _wait_answers(load, 0, 40)
        # Kept warm for no time at all: the next deploy removes the previous colour.
        result, out = _shipyard("release", "--env", env_name, "--version", version,
                                extra={"SHIPYARD_RELEASE__KEEP_PREVIOUS_SECONDS": "0"})
        assert result.returncode == 0, _said(out)
        up = run_shipyard("up", "--env", env_name)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
        assert not _project_containers(settings, before.live)
        status = run_shipyard("status", "--env", env_name)
        assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
        assert f"api-{before.live}" in status.stdout and "idle" in status.stdout, status.stdout[-3000:]
        # The rollback starts it again behind the gate and the smoke test, then switches.
        result, out = _shipyard("rollback", "--env", env_name)
        assert result.returncode == 0, _said(out)
        assert "release: start" in out and "release: smoke" in out
        after = time.monotonic()
        _wait_answers(load, after, 40)
    assert load.failed() == [], load.failed()[:10]
    state = read_state(settings)
    assert (state.live, state.live_version) == (before.live, before.live_version)
    assert {served for t, _, served in load.answers if t >= after} == {f"{before.live}/{before.live_version}"}
