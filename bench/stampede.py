"""Case 5: concurrent first callers: clients started and time until all are served.

``.venv/bin/python bench/stampede.py [--quick] [--out DIR]`` writes DIR/results.json.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("stampede"))
