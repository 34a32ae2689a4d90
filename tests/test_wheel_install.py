"""The built wheel, installed without extras into a fresh virtualenv, is a working library.

The virtualenv gets the wheel and sees only the library's own dependencies (pinned by
requirements.lock) and pytest. Those live in a virtualenv of their own under ``.venv/``,
named by the hash of the lock and the declared dependencies: built once (pip's cache or the
package index serves them), then reused until either changes. The simulator it talks to
runs here, from the full environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import GroundTruth
from driftshare.sim import Simulator

REPO = Path(__file__).resolve().parents[1]
_NOT_LIBRARY = (
    "driftshare.sim",
    "driftshare._web",
    "driftshare._serve",
    "driftshare._demo",
    "driftshare._engines",
    "driftshare._cli",
    "bench",
    "matplotlib",
    "pytest_asyncio",
)
"""Modules ``import driftshare`` and a funding read must not load."""

_READ_FUNDING = textwrap.dedent(
    """
    import asyncio, importlib.util, json, sys

    import driftshare
    from driftshare import DriftClientManager

    async def main() -> None:
        DriftClientManager.configure(rpc_url=sys.argv[1], health_interval_s=3600)
        try:
            rate = await DriftClientManager.get_funding_rate("SOL-PERP")
        finally:
            await DriftClientManager.shutdown()
        print(json.dumps({
            "file": driftshare.__file__,
            "rate": None if rate is None else rate.to_dict(),
            "modules": sorted(sys.modules),
            "absent": [m for m in ("matplotlib", "pytest_asyncio")
                       if importlib.util.find_spec(m) is None],
        }))

    asyncio.run(main())
    """
)


def _clean_env() -> dict[str, str]:
    """This environment without what would lead the fresh one to the checkout or settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("DRIFT_")
    }


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def _site_packages(root: Path) -> Path:
    relative = sysconfig.get_path("purelib", vars={"base": ".", "platbase": "."})
    return root / relative


def _dependencies() -> Path:
    """The virtualenv of the library's dependencies and pytest, built when missing."""
    lock = REPO / "requirements.lock"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = [*declared, "pytest"]
    key = hashlib.sha256(lock.read_bytes() + json.dumps(wanted).encode()).hexdigest()[:16]
    target = REPO / ".venv" / f"wheel-deps-{key}"
    if (target / "bin" / "python").exists():
        return target
    target.parent.mkdir(exist_ok=True)
    # Built aside and renamed, so a run cut short leaves nothing that looks complete.
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix="wheel-deps-building-"))
    try:
        venv.create(building, with_pip=True)
        _run(building / "bin" / "python", "-m", "pip", "install", "-q", "-c", lock, *wanted)
        building.rename(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel of this checkout, installed without extras, on
    top of the cached dependencies (a ``.pth`` file puts them on its path)."""
    root = tmp_path_factory.mktemp("wheel")
    dependencies = _dependencies()
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", REPO)
    (wheel,) = (root / "dist").glob("driftshare-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    pth = _site_packages(root / "venv") / "dependencies.pth"
    pth.write_text(f"{_site_packages(dependencies)}\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    return python


def _is_outside_library(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in _NOT_LIBRARY)


@pytest.mark.timeout(600)
async def test_bare_install_serves_funding_from_a_simulator(
    bare_python: Path, simulator: Simulator
) -> None:
    proc = await asyncio.create_subprocess_exec(
        bare_python,
        "-c",
        _READ_FUNDING,
        simulator.http_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=bare_python.parent,
        env=_clean_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])

    assert Path(result["file"]).is_relative_to(bare_python.parents[1])
    assert result["absent"] == ["matplotlib", "pytest_asyncio"]
    assert [m for m in result["modules"] if _is_outside_library(m)] == []

    world = simulator.world
    assert world is not None
    rate = result["rate"]
    assert rate is not None
    assert (rate["market"], rate["market_index"], rate["stale"]) == ("SOL-PERP", 0, False)
    assert rate["rate_hourly"] == GroundTruth(simulator, now=0).rate_hourly(0)
    assert rate["oracle_price"] == pytest.approx(world.oracle_price(0), rel=1e-6)


def test_pytest_without_pytest_asyncio_ignores_the_plugin(
    bare_python: Path, tmp_path: Path
) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    # anchorpy (a driftpy dependency) registers a plugin that imports pytest_asyncio itself.
    done = _run(
        bare_python,
        "-m",
        "pytest",
        "-p",
        "no:anchorpy",
        "-p",
        "no:cacheprovider",
        "--trace-config",
        tmp_path,
    )
    assert "driftshare._pytest_plugin" in done.stdout
    assert "1 passed" in done.stdout


def test_the_wheel_holds_no_test_or_benchmark_harness(bare_python: Path) -> None:
    (wheel,) = (bare_python.parents[2] / "dist").glob("driftshare-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "driftshare/__init__.py" in names
    assert [n for n in names if n.startswith(("bench/", "tests/")) or "harness" in n] == []
