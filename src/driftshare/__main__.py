from driftshare._cli import run

raise SystemExit(run())
