"""What importing driftshare loads, checked in fresh interpreters: ``import driftshare`` alone
loads no heavy dependency, the public names load what a read needs and none of the extras."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PUBLIC = {
    "METRICS_REGISTRY": "driftshare._metrics.REGISTRY",
    "AccountInfo": "driftshare.models.AccountInfo",
    "AccountStatus": "driftshare.models.AccountStatus",
    "ConfigError": "driftshare.config.ConfigError",
    "DriftAdapter": "driftshare.adapter.DriftAdapter",
    "DriftClientManager": "driftshare.manager.DriftClientManager",
    "DriftFundingFeed": "driftshare.feed.DriftFundingFeed",
    "FundingInfo": "driftshare.feed.FundingInfo",
    "FundingRateData": "driftshare.models.FundingRateData",
    "MarketData": "driftshare.models.MarketData",
    "OrderInfo": "driftshare.models.OrderInfo",
    "PositionInfo": "driftshare.models.PositionInfo",
    "Settings": "driftshare.config.Settings",
    "TransactionFailed": "driftshare._tx.driftpy_sender.TransactionFailed",
    "TransactionNotConfirmed": "driftshare._tx.driftpy_sender.TransactionNotConfirmed",
    "TransactionUnknown": "driftshare._tx.driftpy_sender.TransactionUnknown",
    "TxResult": "driftshare.models.TxResult",
    "load_settings": "driftshare.config.load_settings",
    "redact_url": "driftshare._redaction.redact_url",
}
"""The package's public names (its API before the exports became lazy) and where each lives."""

_EXTRAS = (
    "redis",
    "driftshare.sim",
    "driftshare._fleet",
    "driftshare._snapshot",
    "driftshare._web",
    "driftshare._serve",
    "driftshare._engines",
    "driftshare._demo",
    "driftshare._cli",
)
"""Modules only a fleet, a snapshot, ``driftshare serve``, the simulator or the CLI need."""

_HEAVY = (
    "driftpy",
    "solana",
    "aiohttp",
    "grpc",
    "rich",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "tenacity",
    "aiolimiter",
    "driftshare._tx",
    "driftshare._accounts",
    "driftshare._client",
    "driftshare._data",
)
"""What driftpy.drift_client or a read loads, which ``import driftshare`` alone must not."""


def _loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def _among(loaded: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == r or m.startswith(f"{r}.") for r in roots)]


def test_import_driftshare_loads_no_heavy_dependency_nor_extra() -> None:
    loaded = _loaded_after("import driftshare")
    assert "driftshare" in loaded
    assert _among(loaded, _HEAVY + _EXTRAS) == []


def test_the_public_names_load_what_a_read_needs_and_no_extra() -> None:
    loaded = _loaded_after("from driftshare import *")
    assert {"driftpy.drift_client", "driftshare.manager", "pydantic"} <= set(loaded)
    assert _among(loaded, _EXTRAS) == []


def test_every_public_name_is_the_object_of_its_module() -> None:
    check = textwrap.dedent(
        f"""
        import importlib
        import driftshare
        public = {_PUBLIC!r}
        namespace = {{}}
        exec("from driftshare import *", namespace)
        wrong = []
        for name, home in public.items():
            module, _, attribute = home.rpartition(".")
            expected = getattr(importlib.import_module(module), attribute)
            if namespace.get(name) is not expected or getattr(driftshare, name) is not expected:
                wrong.append(name)
        assert sorted(driftshare.__all__) == sorted(public), driftshare.__all__
        assert set(public) <= set(dir(driftshare))
        assert not wrong, wrong
        assert driftshare.manager.DriftClientManager is driftshare.DriftClientManager
        """
    )
    subprocess.run([sys.executable, "-c", check], check=True)
