"""Case 3: read latency of cache hits and misses, shared vs legacy.

``.venv/bin/python bench/latency.py [--quick] [--out DIR]`` writes DIR/results.json.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("latency"))
