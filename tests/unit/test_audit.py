"""The audit trail: events built from a command's run (shipyard.audit), appended on the hosts
and read back (shipyard.controller.audit_log, against a temporary deploy root), and the CLI's one
hook (shipyard.cli.audited) recording ok, failed, raised and interrupted runs, never a secret."""

import argparse
import datetime as dt
import json
import os
import stat
import subprocess
import sys

import pytest

from shipyard import audit, cli, commands
from shipyard.audit import Checkout
from shipyard.controller import audit_log
from shipyard.errors import ShipyardError
from shipyard.inventory import load_environment

CHECKOUT = Checkout(commit="0123456789abcdef0123456789abcdef01234567", dirty=True)


def event(**changes):
    base = dict(event_id="e1", env="ci", command="pg-promote", options={"replica": "postgres-replica-1", "force": False},
                sensitive=(), user="alice", machine="ops-1", checkout=CHECKOUT, started=1796440000.25,
                duration_s=12.3456, exit_code=0)
    return audit.build_event(**{**base, **changes})


def test_an_ok_run_and_the_three_ways_to_fail():
    assert event().result == "ok" and event().error == "" and event().duration_s == 12.346
    by_code = event(exit_code=3)
    assert (by_code.result, by_code.exit_code, by_code.error) == ("failed", 3, "")
    raised = event(exit_code=2, error=ShipyardError("environment ci", "has no PostgreSQL node 'x'", "name one of: a"))
    assert raised.result == "failed" and raised.error == "environment ci: has no PostgreSQL node 'x'"
    interrupted = event(exit_code=None, error="interrupted (Ctrl-C)")
    assert (interrupted.result, interrupted.exit_code) == ("failed", None)
    assert "FAILED (interrupted): interrupted (Ctrl-C)" in audit.table([interrupted], 5)


def test_a_sensitive_option_is_recorded_as_a_mask_and_its_value_nowhere():
    recorded = event(command="config-set", options={"key": "token", "value": "s3cret-value"}, sensitive={"value"})
    assert recorded.options == {"key": "token", "value": audit.MASK}
    assert "s3cret-value" not in audit.to_line(recorded) and "s3cret-value" not in audit.table([recorded], 1)
    unset = event(options={"value": None}, sensitive={"value"})
    assert unset.options == {"value": None}  # not given: nothing to hide, and the reader sees it was not


def test_a_line_reads_back_as_the_same_event_and_a_torn_line_is_reported_not_fatal():
    first, second = event(event_id="a"), event(event_id="b", exit_code=1)
    line = audit.to_line(first)
    assert line.endswith("\n") and line.count("\n") == 1 and json.loads(line)["commit"] == CHECKOUT.commit
    events, problems = audit.parse_lines(line + '{"id": "torn\n' + audit.to_line(second), "host ci: log")
    assert events == [first, second]
    assert problems == ["host ci: log:2: not an audit event (JSONDecodeError); line skipped"]


def test_hosts_merge_into_one_list_each_event_once_in_time_order():
    early, late = event(event_id="x", started=100.0), event(event_id="y", started=200.0)
    assert audit.merge([[late, early], [early]]) == [early, late]


def test_the_table_shows_the_last_events_with_who_what_commit_and_result():
    rows = audit.table([event(event_id=str(n), started=1796440000.0 + n, exit_code=n % 2,
                              options={"replica": "postgres-replica-1", "force": n == 2}) for n in range(4)], 2)
    lines = rows.splitlines()
    assert lines[0].split() == ["started", "(UTC)", "took", "who", "command", "commit", "result"]
    assert len(lines) == 3  # the header and the last two
    started = dt.datetime.fromtimestamp(1796440002.0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert lines[1].startswith(started)
    assert "pg-promote --force --replica=postgres-replica-1" in lines[1] and lines[1].split()[-1] == "ok"
    assert "alice@ops-1" in lines[2] and "0123456789ab+dirty" in lines[2] and lines[2].endswith("FAILED (exit 1)")


def test_the_log_lives_beside_the_project_not_in_it():
    """A deploy copies and compares the project (last-good) and `make down VOLUMES=1` deletes it."""
    path = audit.audit_log_path("/opt/shipyard/", "ci")
    assert path == "/opt/shipyard/.ci.audit.log"
    assert not path.startswith(commands.project_dir("/opt/shipyard", "ci") + "/")


# --- the writer and the reader, on @local hosts, against a temporary deploy root ---------------

@pytest.fixture
def local_settings(repo, tmp_path):
    return load_environment(repo, "local", {"SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")})


def test_events_are_appended_mode_0640_and_read_back(local_settings, tmp_path):
    assert audit_log.record(local_settings, event(event_id="a")) == [local_settings.hosts[0].name]
    audit_log.record(local_settings, event(event_id="b", started=1796440099.0))
    path = tmp_path / "root" / ".local.audit.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert len(path.read_text().splitlines()) == 2
    events, problems = audit_log.read(local_settings)
    assert [e.id for e in events] == ["a", "b"] and problems == []


def test_a_host_that_cannot_be_written_is_reported_and_the_command_goes_on(repo, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    settings = load_environment(repo, "local", {"SHIPYARD_DEPLOY_ROOT": str(tmp_path / "a-file" / "root")})
    assert audit_log.record(settings, event()) == []
    err = capsys.readouterr().err
    assert f"the audit event of `pg-promote` was not written to {tmp_path}/a-file/root/.local.audit.log" in err
    assert "fix:" in err


def test_the_checkout_names_its_commit_and_whether_it_differs(repo, tmp_path):
    assert audit_log.checkout(tmp_path) == Checkout(commit="", dirty=False)  # not a git checkout
    here = audit_log.checkout(repo)
    assert len(here.commit) == 40 and int(here.commit, 16) >= 0


# --- the CLI's hook ----------------------------------------------------------------------------

@pytest.fixture
def audited_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SHIPYARD_DEPLOY_ROOT", str(tmp_path / "root"))
    return tmp_path / "root" / ".local.audit.log"


def _recorded(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_hook_records_a_changing_command_s_run_with_its_options_masked(audited_root):
    args = argparse.Namespace(env="local", command="config-set")
    assert cli.audited(args, True, {"key": "k", "value": "hunter2"}, {"value"}, lambda: 0) == 0
    [recorded] = _recorded(audited_root)
    assert (recorded["command"], recorded["env"], recorded["result"], recorded["exit_code"]) == ("config-set", "local", "ok", 0)
    assert recorded["options"] == {"key": "k", "value": "***"} and "hunter2" not in audited_root.read_text()
    assert recorded["user"] and recorded["machine"] and len(recorded["commit"]) == 40


@pytest.mark.parametrize("raised, code, error", [
    (ShipyardError("host x", "refused", "do y"), 2, "host x: refused"),
    (KeyboardInterrupt(), None, "interrupted (Ctrl-C)"),
    (RuntimeError("boom"), 1, "RuntimeError: boom"),
])
def test_the_hook_records_a_run_that_raised_and_raises_it_on(audited_root, raised, code, error):
    def run():
        raise raised

    with pytest.raises(type(raised)):
        cli.audited(argparse.Namespace(env="local", command="up"), True, {}, set(), run)
    [recorded] = _recorded(audited_root)
    assert (recorded["result"], recorded["exit_code"], recorded["error"]) == ("failed", code, error)


def test_a_read_only_command_leaves_no_event(audited_root):
    assert cli.audited(argparse.Namespace(env="local", command="status"), False, {}, set(), lambda: 0) == 0
    assert not audited_root.exists()


def test_every_changing_command_is_marked_and_no_read_only_one():
    marked = {name for name, command in cli.component_commands().items() if command.changes}
    assert {"pg-promote", "pg-rebuild", "pg-restart", "pg-backup", "pg-restore", "redis-failover", "config-push", "config-set",
            "config-rollback", "vault-init", "secrets-migrate"} == marked
    assert {"up", "down", "release", "rollback", "secrets-rotate"} == cli.CHANGING
    assert not cli.CHANGING & {"status", "plan", "logs", "trace", "audit", "releases", "validate", "render"}


def test_a_refused_command_run_as_a_user_runs_it_is_on_record(repo, tmp_path):
    """Through `python -m shipyard`: refused before it changed anything, yet recorded, with its
    exit code and the error's first line."""
    environ = {**os.environ, "SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")}
    done = subprocess.run([sys.executable, "-m", "shipyard", "pg-promote", "--env", "local", "--replica", "nope"],
                          cwd=repo, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    [recorded] = _recorded(tmp_path / "root" / ".local.audit.log")
    assert recorded["options"] == {"force": False, "replica": "nope", "to": None} and recorded["exit_code"] == 2
    assert recorded["error"] == "environment local: has no PostgreSQL node 'nope'"
    shown = subprocess.run([sys.executable, "-m", "shipyard", "audit", "--env", "local"], cwd=repo, env=environ,
                           capture_output=True, text=True, timeout=60)
    assert "pg-promote --replica=nope" in shown.stdout and "FAILED (exit 2): environment local: has no" in shown.stdout


def test_an_ssh_host_s_append_is_one_quoted_command_fed_the_line_on_stdin(repo, tmp_path, monkeypatch):
    """What runs on an SSH host, run here by a local shell as sshd would run it: the directory and
    the file made, the line appended (never on the command line), mode 0640."""
    from shipyard.controller.hosts import HostControl

    settings = load_environment(repo, "production", {"SHIPYARD_DEPLOY_ROOT": str(tmp_path / "root")})
    host = settings.hosts[0]
    path = audit.audit_log_path(settings.deploy_root, settings.name)
    remote_commands, run = [], subprocess.run

    def as_sshd(argv, **kwargs):
        assert argv[0] == "ssh" and host.connect in argv[-2]
        remote_commands.append(argv[-1])
        return run(["sh", "-c", argv[-1]], **kwargs)

    monkeypatch.setattr(subprocess, "run", as_sshd)
    line = audit.to_line(event(options={"value": "x; rm -rf /"}))
    for _ in range(2):
        HostControl(settings, host).append_file(path, line.encode(), audit.LOG_MODE)
    monkeypatch.undo()
    assert len(remote_commands) == 2 and not any("rm -rf" in c for c in remote_commands)
    assert open(path).read() == line * 2 and stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_an_error_of_several_problems_keeps_its_first_problem_on_record():
    """A deploy refused for unreachable hosts (or bad settings): the event's error says which,
    not only the heading."""
    from shipyard.errors import ShipyardError, UnreachableError

    error = UnreachableError([ShipyardError("host h2 (root@10.0.0.2)", "not reachable over SSH: Connection refused", "x"),
                              ShipyardError("host h3 (root@10.0.0.3)", "not reachable over SSH: timed out", "x")])
    assert audit.first_line(error) == ("2 host(s) not reachable; the deploy changed nothing on any host: host h2 "
                                       "(root@10.0.0.2): not reachable over SSH: Connection refused (and 1 more)")
