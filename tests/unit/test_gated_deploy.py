"""shipyard.controller.gated_deploy and shipyard.apply.pyinfra_gate: a deploy's pyinfra process
started ahead loads, waits at its gate, and runs pyinfra with the argv it is handed — or ends,
having done nothing, when the deploying command stops first."""

from __future__ import annotations

import subprocess
import sys

from shipyard.controller import gated_deploy


def test_the_deploy_files_imports_are_loaded_ahead_and_nothing_else_runs(tmp_path, repo):
    # In a process of its own: the gate's module patches the standard library for gevent.
    deploy = tmp_path / "deploy.py"
    deploy.write_text('"""doc"""\nimport json\nfrom shipyard import yamltext\nraise SystemExit("ran the deploy file")\n')
    check = ("import sys; from pathlib import Path; from shipyard.apply import pyinfra_gate; "
             f"pyinfra_gate.preload(Path({str(deploy)!r})); print('shipyard.yamltext' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=repo)
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr


def test_pyinfra_runs_with_the_argv_the_gate_hands_it(repo):
    deploy = gated_deploy.GatedDeploy(repo)
    # What `pyinfra --version` prints is its own: the process ran pyinfra's CLI with this argv.
    out = subprocess.run([sys.executable, "-c", "import sys, pyinfra_cli.main as m; sys.argv=['pyinfra','--version']; m.main()"],
                         capture_output=True, text=True, cwd=repo)
    assert deploy.run(["pyinfra", "--version"]) == out.returncode == 0


def test_an_abandoned_deploy_ends_without_running(repo):
    deploy = gated_deploy.GatedDeploy(repo)
    process = deploy._process
    deploy.abandon()
    assert process.returncode is not None
    deploy.abandon()  # twice: nothing more


def test_the_one_started_ahead_is_taken_once(repo):
    gated_deploy.start_ahead(repo)
    first = gated_deploy.take(repo)
    second = gated_deploy.take(repo)
    assert first is not second
    for deploy in (first, second):
        deploy.abandon()
