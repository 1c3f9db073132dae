"""The deploy's pyinfra process, started while `make up` still checks the environment
(shipyard.cli; its side: shipyard.controller.gated_deploy). It loads pyinfra and every module the
deploy file imports (~0.8 s of CPU, which the checks leave idle while they wait on the hosts'
SSH handshakes), then waits at a gate — a pipe from the deploying command — for pyinfra's
arguments. Before the gate opens it reads no inventory, connects to no host and prints nothing;
a gate closed without arguments (a check failed) ends it.

    python -m shipyard.apply.pyinfra_gate <fd of the gate's read end>
"""

# First: pyinfra's CLI patches the standard library for gevent as it is imported, before
# anything imports ssl or threading (as `pyinfra` itself does).
import pyinfra_cli  # noqa: F401  isort: skip

import ast
import json
import os
import sys
from pathlib import Path

DEPLOY_FILE = Path(__file__).resolve().parents[2] / "deploy.py"


def preload(deploy_file: Path) -> None:
    """The deploy file's top-level imports, executed (the file itself runs later, once a host,
    within pyinfra's context)."""
    tree = ast.parse(deploy_file.read_text(), str(deploy_file))
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    exec(compile(ast.Module(body=imports, type_ignores=[]), str(deploy_file), "exec"), {"__name__": "deploy_preload"})


def main() -> int:
    gate = int(sys.argv[1])
    try:
        from pyinfra_cli.main import main as pyinfra_main

        preload(DEPLOY_FILE)
        with os.fdopen(gate, "rb") as opened:
            line = opened.readline()
    except KeyboardInterrupt:  # the deploying command was interrupted too, and says so
        return 130
    if not line:
        return 1  # the deploying command stopped before any host, and said why
    sys.argv = json.loads(line)
    return pyinfra_main()


if __name__ == "__main__":
    sys.exit(main())
