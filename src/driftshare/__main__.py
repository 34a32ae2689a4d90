from driftshare._cli import main

raise SystemExit(main())
