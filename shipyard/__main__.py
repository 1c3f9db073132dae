import sys
from pathlib import Path

if sys.argv[1:2] == ["up"]:
    # The deploy's pyinfra process first: it loads beside this command's own imports and checks,
    # and waits for them (shipyard.controller.gated_deploy).
    from shipyard.controller.gated_deploy import start_ahead

    start_ahead(Path(__file__).resolve().parent.parent)

from shipyard.cli import main  # noqa: E402

sys.exit(main())
