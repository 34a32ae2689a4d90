from driftshare.cli import main

raise SystemExit(main())
