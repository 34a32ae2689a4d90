"""@solana/web3.js, a foreign client, sends transactions to the simulator and reads their status.

The script lives in ``tools/web3-check`` (``@solana/web3.js`` pinned by its lock file); the
test installs it with ``npm ci`` when it is missing, and is skipped where node is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from anchorpy import Context
from driftpy.addresses import get_user_account_public_key
from driftpy.drift_client import DriftClient
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from driftshare.sim import Simulator
from driftshare.sim._codec import DRIFT_PROGRAM_ID

TOOL = Path(__file__).resolve().parent.parent / "tools" / "web3-check"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed to run @solana/web3.js"
)


def _install() -> None:
    if (TOOL / "node_modules" / "@solana" / "web3.js").is_dir():
        return
    assert NPM is not None
    subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=TOOL,
        check=True,
        capture_output=True,
        timeout=300,
    )


def _cancel_orders(authority: Keypair, connection: AsyncClient) -> dict[str, Any]:
    """Drift's ``cancel_orders`` for ``authority``'s sub-account 0, built by driftpy's coder."""
    client = DriftClient(connection, authority, env="mainnet")
    ix = client.program.instruction["cancel_orders"](
        None,
        None,
        None,
        ctx=Context(
            accounts={
                "state": client.get_state_public_key(),
                "user": get_user_account_public_key(DRIFT_PROGRAM_ID, authority.pubkey(), 0),
                "authority": authority.pubkey(),
            }
        ),
    )
    return {
        "programId": str(ix.program_id),
        "keys": [
            {"pubkey": str(m.pubkey), "isSigner": m.is_signer, "isWritable": m.is_writable}
            for m in ix.accounts
        ],
        "data": base64.b64encode(bytes(ix.data)).decode(),
    }


async def test_web3js_sends_and_reads_statuses(simulator_factory: Any) -> None:
    await asyncio.to_thread(_install)
    sim: Simulator = await simulator_factory(markets=1, tick_s=0.05)
    wallet = Keypair()
    async with AsyncClient(sim.http_url) as connection:
        request = {
            "url": sim.http_url,
            "secretKey": list(bytes(wallet)),
            "instruction": _cancel_orders(wallet, connection),
        }
        assert NODE is not None
        process = await asyncio.create_subprocess_exec(
            NODE,
            "check.mjs",
            cwd=TOOL,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), 60)
        assert process.returncode == 0, err.decode()
        seen = json.loads(out.decode().strip().splitlines()[-1])

        assert seen["transfer"]["received"] == 1000
        assert seen["transfer"]["status"]["err"] is None
        # What web3.js read is what the chain recorded for the Drift instruction.
        signature = seen["instruction"]["signature"]
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getSignatureStatuses",
            "params": [[signature]],
        }
        async with httpx.AsyncClient() as http:
            ours = (await http.post(sim.http_url, json=body)).json()["result"]["value"][0]
        theirs = seen["instruction"]["status"]
        assert (theirs["slot"], theirs["err"]) == (ours["slot"], ours["err"])
        assert seen["instruction"]["confirmation"] == ours["err"]
    stats = sim.stats()["transactions"]["by_signer"][str(wallet.pubkey())]
    assert stats["received"] == 2
    assert stats["landed"] + stats["failed"] == 2
