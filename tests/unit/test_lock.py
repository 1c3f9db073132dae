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
