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
