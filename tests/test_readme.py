"""README.md against the code it documents: the configuration table and the metrics list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from driftshare import METRICS_REGISTRY, Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _config_table() -> dict[str, str]:
    rows = re.findall(r"^\| `(DRIFT_[A-Z0-9_]+)` \| ([^|]*) \|", _section("Configuration"), re.M)
    return {name: default.strip() for name, default in rows}


def test_the_configuration_table_lists_every_setting() -> None:
    settings = {f"DRIFT_{name.upper()}" for name in Settings.model_fields}
    assert set(_config_table()) == settings


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_configuration_table_shows_each_real_default(name: str) -> None:
    default = Settings.model_fields[name].default
    assert default is not PydanticUndefined
    shown = _config_table()[f"DRIFT_{name.upper()}"]
    if default is None:
        # No value: the table says what happens instead ("none", "all", or, for the RPC URL,
        # which endpoint is used), never a value the model would not have.
        assert not shown.startswith("`"), shown
    else:
        literal = re.fullmatch(r"`([^`]*)`", shown)
        assert literal is not None, f"{name}: {shown!r} is not one `value`"
        value = literal.group(1)
        assert (type(default)(value) if isinstance(default, int | float) else value) == default


def test_the_metrics_section_names_every_exported_metric() -> None:
    listed = set(re.findall(r"`(drift_[a-z_]+)`", _section("Metrics")))
    # prometheus_client reports a counter's family name without the "_total" it exports.
    exported = {
        f"{metric.name}_total" if metric.type == "counter" else metric.name
        for metric in METRICS_REGISTRY.collect()
    }
    assert listed == exported
