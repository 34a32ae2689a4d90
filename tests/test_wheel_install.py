"""The built wheel, installed without extras into a fresh virtualenv, is a working library.

The virtualenv gets the wheel and sees only the library's own dependencies (pinned by
requirements.lock) and pytest, linked from this environment into a folder of their own.
The simulator it talks to runs here, from the full environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    """This environment without what would lead the fresh one to the checkout, settings or
    this run's pytest options."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS") and not k.startswith("DRIFT_")
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


def _requirements(wanted: list[str]) -> list[metadata.Distribution]:
    """The installed distributions pip would install for ``wanted``: each requirement whose
    markers hold on this interpreter, with the extras it names, and theirs in turn."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    pending = [(Requirement(line), "") for line in wanted]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        dist = metadata.distribution(requirement.name)
        found[canonicalize_name(requirement.name)] = dist
        for wanted_extra in ("", *requirement.extras):
            if (dist.name, wanted_extra) not in done:
                done.add((dist.name, wanted_extra))
                pending += [(Requirement(line), wanted_extra) for line in dist.requires or ()]
    return list(found.values())


def _dependencies(root: Path) -> Path:
    """A folder holding the library's dependencies and pytest, and nothing else.

    Linked file by file from this environment, which requirements.lock pinned: the same
    files a ``pip install -c requirements.lock`` of them would unpack, in a second instead
    of the half minute pip spends unpacking them again.
    """
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    site = Path(sysconfig.get_path("purelib"))
    target = root / "site-packages"
    for dist in _requirements([*declared, "pytest"]):
        for file in dist.files or ():
            source = Path(os.path.normpath(str(dist.locate_file(file))))
            if not source.is_relative_to(site):
                continue  # a console script: bin/ is not on the path the .pth file adds
            link = target / source.relative_to(site)
            if not link.is_symlink():  # a RECORD may list a file twice
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    return target


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel of this checkout, installed without extras, on
    top of the dependencies (a ``.pth`` file puts them on its path)."""
    root = tmp_path_factory.mktemp("wheel")
    dependencies = _dependencies(root)
    # Built with the lock's setuptools, as `make` installs the checkout.
    build = ("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", REPO)
    _run(sys.executable, "-m", "pip", *build)
    (wheel,) = (root / "dist").glob("driftshare-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    pth = _site_packages(root / "venv") / "dependencies.pth"
    pth.write_text(f"{dependencies}\n")
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
