"""shipyard.controller.ssh's shared connections: a one-shot ssh of the controller rides one
connection a host (ControlMaster), closed when the process ends. Real ssh runs against the test
hosts (tests/multihost); here, the argv and the closing."""

from __future__ import annotations

import os
import subprocess

from shipyard.controller import ssh


def test_a_one_shot_ssh_rides_the_processs_shared_connection_and_the_rest_of_its_argv_is_kept():
    argv = ["ssh", "-o", "BatchMode=yes", "root@10.0.0.1", "cat /x"]
    shared = ssh.shared(argv)
    assert shared[0] == "ssh" and shared[-2:] == ["root@10.0.0.1", "cat /x"] and shared[7:] == argv[1:]
    options = dict(shared[i + 1].split("=", 1) for i in range(1, 7, 2))
    assert options["ControlMaster"] == "auto" and options["ControlPersist"] == "60"
    directory = os.path.dirname(options["ControlPath"])
    assert options["ControlPath"].endswith("/%C") and os.stat(directory).st_mode & 0o777 == 0o700  # mkdtemp's
    ssh.shared(argv)  # the same directory for the whole process
    assert os.path.dirname(dict(ssh.shared(argv)[i + 1].split("=", 1) for i in range(1, 7, 2))["ControlPath"]) == directory


def test_closing_asks_each_master_to_exit_and_removes_the_directory(monkeypatch):
    directory = os.path.dirname(dict(ssh.shared(["ssh", "h", "true"])[i + 1].split("=", 1)
                                     for i in range(1, 7, 2))["ControlPath"])
    for name in ("abc", "def"):  # two masters' sockets: both asked at once, both waited for
        open(os.path.join(directory, name), "w").close()
    asked, waited = [], []

    class Asked:
        def __init__(self, argv, **_):
            asked.append(argv)

        def wait(self, timeout=None):
            waited.append(asked[len(waited)])
            return 0

    monkeypatch.setattr(ssh.subprocess, "Popen", Asked)
    ssh.close_shared()
    assert sorted(asked) == [["ssh", "-o", f"ControlPath={directory}/{name}", "-O", "exit", "shipyard-shared"]
                             for name in ("abc", "def")]
    assert waited == asked
    assert not os.path.exists(directory)
    ssh.close_shared()  # nothing left: nothing asked
    assert len(asked) == 2
