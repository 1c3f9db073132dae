import pytest

from shipyard.errors import LockError
from shipyard.lock import environment_lock


def test_second_deploy_of_same_environment_stops_with_a_clear_message(tmp_path):
    with environment_lock(tmp_path, "ci"):
        with pytest.raises(LockError) as err:
            with environment_lock(tmp_path, "ci", wait_s=0.6):
                pass
        assert "another deploy holds the lock (pid" in str(err.value)
        assert "LOCK_WAIT" in err.value.fix
        with environment_lock(tmp_path, "local"):  # other environments are independent
            pass
    with environment_lock(tmp_path, "ci"):  # released after the first deploy
        pass
