import pytest

from shipyard.errors import LockError
from shipyard.lock import environment_lock


def test_second_deploy_of_same_environment_stops_with_a_clear_message(tmp_path):
    locks = {"SHIPYARD_LOCK_DIR": str(tmp_path / "locks")}
    with environment_lock(tmp_path, "ci", environ=locks):
        with pytest.raises(LockError) as err:
            with environment_lock(tmp_path, "ci", wait_s=0.6, environ=locks):
                pass
        assert "another deploy holds the lock (pid" in str(err.value)
        assert "LOCK_WAIT" in err.value.fix
        with environment_lock(tmp_path, "local", environ=locks):  # other environments are independent
            pass
    with environment_lock(tmp_path, "ci", environ=locks):  # released after the first deploy
        pass


def test_two_checkouts_of_the_repo_share_the_lock_of_an_environment(tmp_path):
    locks = {"SHIPYARD_LOCK_DIR": str(tmp_path / "locks")}
    with environment_lock(tmp_path / "clone-a", "local", environ=locks):
        with pytest.raises(LockError) as err:
            with environment_lock(tmp_path / "clone-b", "local", environ=locks):
                pass
    assert f"of checkout {tmp_path / 'clone-a'}" in str(err.value)


def test_a_host_lock_is_stale_only_when_its_deploy_ran_here_and_is_gone():
    import os
    import socket
    import subprocess

    from shipyard.apply.hostlock import stale

    me = socket.gethostname()
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert stale(f"controller {me} pid {gone.pid} checkout /a", me)
    assert not stale(f"controller {me} pid {os.getpid()} checkout /a", me)  # still deploying
    assert not stale(f"controller other-machine pid {gone.pid} checkout /a", me)  # cannot tell: not ours
    assert not stale("garbage", me)


def test_the_host_lock_is_taken_in_one_command_or_names_its_holder(tmp_path):
    """take_script run by a shell as a host's would: a free lock taken (its directory made), a
    held one left as it is and its holder printed, a replaced one ours."""
    import subprocess

    from shipyard.apply.hostlock import TAKEN, take_script

    path = tmp_path / "locks" / "ci"

    def run(owner, replace=False):
        return subprocess.run(["sh", "-c", take_script(str(path), owner, replace)], capture_output=True,
                              text=True, check=True).stdout.strip()

    assert run("controller a pid 1 checkout /x") == TAKEN
    assert path.read_text() == "controller a pid 1 checkout /x\n"
    assert run("controller b pid 2 checkout /y") == "controller a pid 1 checkout /x"  # held: not touched
    assert path.read_text() == "controller a pid 1 checkout /x\n"
    assert run("controller b pid 2 checkout '/it's'", replace=True) == TAKEN
    assert path.read_text() == "controller b pid 2 checkout '/it's'\n"


def test_the_guards_read_rides_with_the_lock_and_the_last_copy_with_its_release(tmp_path):
    """take_script's ``then`` runs only once the lock is taken, its output after TAKEN; the
    release runs its ``first`` command and keeps the lock when that fails (a failed deploy)."""
    import subprocess

    from shipyard.apply.hostlock import TAKEN, release_script, take_script

    path = tmp_path / "locks" / "ci"

    def sh(script):
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.splitlines()

    assert sh(take_script(str(path), "controller a pid 1 checkout /x", then="echo read; false")) == [TAKEN, "read"]
    assert sh(take_script(str(path), "controller b", then="echo read")) == ["controller a pid 1 checkout /x"]
    sh(release_script(str(path), "controller a pid 1 checkout /x", first="false"))
    assert path.exists()  # what came first failed: the lock stays
    sh(release_script(str(path), "controller b", first="true"))
    assert path.exists()  # not ours
    sh(release_script(str(path), "controller a pid 1 checkout /x", first="true"))
    assert not path.exists()


def test_the_last_good_copy_is_made_when_the_project_differs_only(tmp_path):
    import subprocess
    from types import SimpleNamespace

    from shipyard.apply.rollout import last_good_command

    settings = SimpleNamespace(deploy_root=str(tmp_path), name="ci")
    project = tmp_path / "ci"
    project.mkdir()
    (project / "compose.yaml").write_text("one")
    subprocess.run(["sh", "-c", last_good_command(settings)], check=True)
    copy = next(p for p in tmp_path.iterdir() if p.name != "ci" and p.is_dir())
    assert (copy / "compose.yaml").read_text() == "one"
    inode = copy.stat().st_ino
    subprocess.run(["sh", "-c", last_good_command(settings)], check=True)
    assert copy.stat().st_ino == inode  # the same: not copied again
    (project / "compose.yaml").write_text("two")
    subprocess.run(["sh", "-c", last_good_command(settings)], check=True)
    assert (copy / "compose.yaml").read_text() == "two" and not (tmp_path / f"{copy.name}.new").exists()


def test_what_goes_on_meanwhile_starts_before_the_locks_round_trip(monkeypatch):
    """take_lock's ``meanwhile`` (the live setups made ready: shipyard.apply.rollout.load_ahead)
    is started before the command goes to the host, whose wait it fills."""
    from types import SimpleNamespace

    from shipyard.apply import hostlock

    order = []

    def run_shell(command):
        order.append("round trip")
        return True, SimpleNamespace(stdout_lines=[hostlock.TAKEN, "read"], stderr="")

    monkeypatch.setattr(hostlock.remote, "run_shell", run_shell)
    kept = {}
    monkeypatch.setattr(hostlock, "host", SimpleNamespace(name="h1"))
    hostlock.take_lock("/opt/shipyard/.locks/ci", "controller a", then="echo read",
                       keep=lambda name, lines: kept.update({name: lines}), meanwhile=lambda: order.append("meanwhile"))
    assert order == ["meanwhile", "round trip"] and kept == {"h1": ["read"]}
