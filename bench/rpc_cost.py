"""Cases 1 and 2: RPC requests, WebSockets and client RSS vs engines, shared vs legacy.

``.venv/bin/python bench/rpc_cost.py [--quick] [--out DIR]`` writes DIR/results.json.
"""

from driftshare.bench import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("rpc_cost"))
