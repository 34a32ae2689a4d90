"""Case 4: process start to first funding rate, and connect to ready.

``.venv/bin/python bench/cold_start.py [--quick] [--out DIR]`` writes DIR/results.json.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("cold_start"))
