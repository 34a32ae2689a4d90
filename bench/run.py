"""Every benchmark case, the report and the plots: ``.venv/bin/python bench/run.py [--quick]``.

The same as ``driftshare bench``; the logic is in ``driftshare.benchmarks``.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main())
