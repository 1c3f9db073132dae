import sys
from pathlib import Path

if sys.argv[1:2] == ["up"]:
    # The deploy's pyinfra process first: it loads beside this command's own imports and checks,
    # and waits for them (shipyard.controller.gated_deploy).
    from shipyard.controller.gated_deploy import start_ahead

    start_ahead(Path(__file__).resolve().parent.parent)

# Every engine this process asks is reached over a unix socket (the local one, or the one the ssh
# client forwards: shipyard.controller.ssh); the docker SDK imports paramiko only to offer ssh://
# URLs: ~0.1 s of this command's start (0.25 s on a busy machine), which a rollback waits for
# before users are switched back. pyinfra, which does use it, runs in a process of its own.
sys.modules.setdefault("paramiko", None)

from shipyard.cli import main  # noqa: E402

sys.exit(main())
