"""Case 6: engines behind a provider limited to 10 requests/s.

``.venv/bin/python bench/provider_limit.py [--quick] [--out DIR]`` writes DIR/results.json.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("provider_limit"))
