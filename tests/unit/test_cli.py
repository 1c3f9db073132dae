"""The command line as a user runs it (``python -m shipyard``): what stops it, and where."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.lock import environment_lock


def shipyard(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_validate_works_with_a_lock_dir_of_ones_own(repo, tmp_path):
    done = shipyard(repo, "validate", "--env", "local", env={"SHIPYARD_LOCK_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "local: valid" in done.stdout


def test_a_locking_command_takes_the_lock_in_the_lock_dir_given(repo, tmp_path):
    """secrets-rotate validates the environment, then takes the lock before it changes anything:
    with the lock in SHIPYARD_LOCK_DIR held here, it stops there, naming that lock file."""
    locks = {"SHIPYARD_LOCK_DIR": str(tmp_path)}
    with environment_lock(repo, "local", environ=locks):
        done = shipyard(repo, "secrets-rotate", "--env", "local", "--name", "postgres_password",
                        env={**locks, "SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "another deploy holds the lock" in done.stderr
    assert f"lock file {tmp_path / 'local.lock'}" in done.stderr
    # Refused, and on record (the audit trail, in this test's deploy root: not this machine's).
    [event] = [json.loads(line) for line in (tmp_path / "root" / ".local.audit.log").read_text().splitlines()]
    assert (event["command"], event["options"], event["exit_code"]) == ("secrets-rotate", {"name": "postgres_password"}, 2)


@pytest.mark.parametrize("how", ["cli", "make"])
def test_a_release_with_a_bad_version_stops_before_anything_happens(repo, tmp_path, how):
    """The environment's lock is held here: a release that got as far as taking it would stop
    with 'another deploy holds the lock' instead; the version check speaks first. Through make,
    a value with a space stays one word, so it is the check that speaks, not argparse."""
    from shipyard.bluegreen import VERSION_PATTERN

    locks = {"SHIPYARD_LOCK_DIR": str(tmp_path)}
    argv = (["make", "-s", "-o", ".venv/.installed", "release", "ENV=local", "VERSION=1.0 x"] if how == "make"
            else [sys.executable, "-m", "shipyard", "release", "--env", "local", "--version", "1.0 x"])
    with environment_lock(repo, "local", environ=locks):
        environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60,
                              env={**environ, **locks, "SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")})
    assert done.returncode != 0
    assert "VERSION (make release VERSION=...): '1.0 x' is not a version" in done.stderr, done.stderr
    assert VERSION_PATTERN in done.stderr and "fix: use e.g. VERSION=1.4.2" in done.stderr
    assert "another deploy holds the lock" not in done.stderr and "unrecognized arguments" not in done.stderr


@pytest.mark.parametrize("args, says", [
    (("--env", "nope", "--name", "edge_tls_key", "--file", "/etc/hostname"), "ENV=nope: names no environment"),
    (("--env", "local", "--name", "edge_tls_key", "--file", "/no/such/file"), "FILE=/no/such/file: is not a file"),
    (("--env", "local", "--name", "postgres_password", "--file", "/etc/hostname"),
     "'postgres_password' is not a secret you supply"),
])
def test_secrets_put_stops_before_writing_anything_and_says_why(repo, tmp_path, args, says):
    before = sorted((repo / "secrets").rglob("*"))
    done = shipyard(repo, "secrets-put", *args, env={"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path)})
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert sorted((repo / "secrets").rglob("*")) == before


def test_a_deploy_limited_to_some_hosts_refuses_what_would_break_the_others(repo, tmp_path):
    """LIMIT=h1,h3 leaves h2 as it is (a host that is down): the names are checked, and refused
    before any host is touched are a limit that leaves out the registry's host (every other
    host pulls through it) and one while a secret rotation is pending (every host must take the
    new value before the old one is retired)."""
    from shipyard.cli import check_limit
    from shipyard.errors import ShipyardError
    from shipyard.inventory import load_environment

    multi = load_environment(repo, "multi", {})
    assert [h.name for h in check_limit(multi, "h1,h3", [])] == ["h1", "h3"]
    assert check_limit(multi, None, ["redis_password"]) == multi.hosts  # no limit: every host, as always
    with pytest.raises(ShipyardError) as err:
        check_limit(multi, "h1,h4", [])
    assert str(err.value).startswith("LIMIT=h1,h4: environment multi has no host h4") and "h1, h2, h3" in str(err.value)
    with pytest.raises(ShipyardError) as err:
        check_limit(multi, "h2,h3", [])
    assert "leaves out h1, which runs registry" in str(err.value) and "add h1 to LIMIT" in str(err.value)
    with pytest.raises(ShipyardError) as err:
        check_limit(multi, "h1,h3", ["redis_password"])
    assert "a rotation of redis_password is pending" in str(err.value) and "h2 would not" in str(err.value)
    # Through the command line: refused before any host is asked (the test hosts are not there).
    done = shipyard(repo, "up", "--env", "multi", "--limit", "h9", env={"SHIPYARD_LOCK_DIR": str(tmp_path)})
    assert done.returncode == 2 and "LIMIT=h9: environment multi has no host h9" in done.stderr, done.stderr
