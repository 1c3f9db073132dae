"""Images through an image delivery (shipyard/apply/image_delivery.py, docs/registry.md): which
images a host pulls (shipyard.image_plan.plan_fetches), and the one command a host runs to log
in and pull — run here for real by sh against a `docker` that records its calls, so what it does
with the password and its Docker configuration is what is checked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shipyard.apply.image_delivery import fetch_script
from shipyard.errors import ShipyardError
from shipyard.image_plan import ObservedImage, plan_fetches

HERE = {"shipyard/redis:7.0": ObservedImage("sha256:" + "a" * 64), "shipyard/taskplatform:v2": ObservedImage("sha256:" + "b" * 64),
        "shipyard/logship:latest": ObservedImage("sha256:" + "c" * 64)}


def test_a_host_pulls_what_it_lacks_or_holds_in_another_build_and_keeps_a_released_version():
    there = {"shipyard/redis:7.0": ObservedImage("sha256:" + "a" * 64),  # the same image: nothing to do
             "shipyard/taskplatform:v2": ObservedImage("sha256:" + "9" * 64)}  # another build of it
    assert plan_fetches(["shipyard/redis:7.0", "shipyard/taskplatform:v2", "shipyard/logship"], HERE, there) == [
        ("shipyard/taskplatform:v2", "the host holds 999999999999, the deploying machine built bbbbbbbbbbbb"),
        ("shipyard/logship", "not on the host")]
    # A released version's image stays as the host holds it (its colour runs it) — unless missing.
    assert plan_fetches(["shipyard/taskplatform:v2"], HERE, there, keep=["shipyard/taskplatform:v2"]) == []
    assert plan_fetches(["shipyard/taskplatform:v2"], HERE, {}, keep=["shipyard/taskplatform:v2"]) == [
        ("shipyard/taskplatform:v2", "not on the host")]


def test_an_image_the_deploying_machine_did_not_build_stops_with_the_fix():
    with pytest.raises(ShipyardError) as caught:
        plan_fetches(["shipyard/prometheus:2.42"], HERE, {})
    assert "image shipyard/prometheus:2.42" in str(caught.value) and "deploy again" in str(caught.value)


FAKE_DOCKER = """#!/bin/sh
# Records each call with the Docker configuration it ran under; `login` records its stdin too.
echo "$DOCKER_CONFIG $*" >>"$CALLS"
case "$1" in
login) echo "stdin=$(cat)" >>"$CALLS" ;;
pull) [ "$3" != "fails/at-pull" ] || { echo "pull failed" >&2; exit 1; } ;;
esac
"""


def _run(tmp_path: Path, pulls: list[tuple[str, str]]) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    bin_dir, workdir, calls = tmp_path / "bin", tmp_path / "fetch", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    workdir.mkdir(mode=0o700)
    (workdir / "login").write_text("s3cret-value")
    argv = fetch_script(["docker", "login", "--username", "shipyard", "--password-stdin", "reg:5000"], pulls, str(workdir))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)})
    return done, calls.read_text().splitlines(), workdir


def test_the_fetch_logs_in_from_the_file_pulls_tags_and_leaves_no_credential(tmp_path):
    done, calls, workdir = _run(tmp_path, [("reg:5000/shipyard/redis:7.0", "shipyard/redis:7.0")])
    assert done.returncode == 0, done.stderr
    config = f"{workdir}/config"
    assert calls == [f"{config} login --username shipyard --password-stdin reg:5000", "stdin=s3cret-value",
                     f"{config} pull --quiet reg:5000/shipyard/redis:7.0",
                     f"{config} tag reg:5000/shipyard/redis:7.0 shipyard/redis:7.0",
                     f"{config} image rm reg:5000/shipyard/redis:7.0"]
    assert not workdir.exists()  # the password file and the login's configuration gone


def test_a_failed_pull_stops_the_fetch_and_still_removes_the_credentials(tmp_path):
    done, calls, workdir = _run(tmp_path, [("fails/at-pull", "x:1"), ("reg:5000/shipyard/redis:7.0", "shipyard/redis:7.0")])
    assert done.returncode != 0 and "pull failed" in done.stderr
    assert not [c for c in calls if "tag" in c or "redis" in c]  # nothing after the failure
    assert not workdir.exists()
