from taskplatform.cli import main

raise SystemExit(main())
