"""The PNG plots of the sharing section, drawn from the measured results only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.sharing.cases import engine_errors

__all__ = ["plot_all"]

_COLORS = {"shared": "#1f77b4", "legacy": "#d62728"}


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Write one PNG per case into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Callable[[Any, dict[str, Any]], None]]] = [
        ("rpc_cost.png", _plot_rpc),
        ("memory.png", _plot_memory),
        ("latency.png", _plot_latency),
        ("cold_start.png", _plot_cold),
        ("provider_limit.png", _plot_limit),
    ]
    written = []
    for name, draw in plots:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(10, 4.5))
        draw(fig, results)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _plot_rpc(fig: Any, results: dict[str, Any]) -> None:
    runs = results["rpc_cost"]["runs"]
    for position, mode in enumerate(("websocket", "polling"), start=1):
        ax = fig.add_subplot(1, 2, position)
        for path in ("shared", "legacy"):
            series = sorted(
                (r for r in runs if r["mode"] == mode and r["path"] == path),
                key=lambda r: r["engines"],
            )
            xs = [r["engines"] for r in series]
            ax.plot(
                xs,
                [r["sim"]["http_requests"] for r in series],
                "o-",
                color=_COLORS[path],
                label=f"{path}: HTTP requests",
            )
            if mode == "websocket":
                ax.plot(
                    xs,
                    [r["sim"]["ws_connections"] for r in series],
                    "s--",
                    color=_COLORS[path],
                    alpha=0.6,
                    label=f"{path}: WebSocket connections",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_yscale("log")
        ax.set_xlabel("engines (N)")
        ax.set_ylabel(f"count in the {results['rpc_cost']['window_s']:g} s run")
        ax.set_title(f"RPC cost vs engines, {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _plot_memory(fig: Any, results: dict[str, Any]) -> None:
    runs = [r for r in results["rpc_cost"]["runs"] if r["mode"] == "websocket"]
    engines = sorted({r["engines"] for r in runs})
    ax = fig.add_subplot(1, 1, 1)
    for path in ("shared", "legacy"):
        series = sorted((r for r in runs if r["path"] == path), key=lambda r: r["engines"])
        ax.plot(
            [r["engines"] for r in series],
            [r["rss_mib"] for r in series],
            "o-",
            color=_COLORS[path],
            label=path,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(engines, [str(n) for n in engines])
    ax.set_xlabel("engines (N)")
    ax.set_ylabel("client process RSS (MiB)")
    ax.set_title("Client memory vs engines (websocket mode)")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _plot_latency(fig: Any, results: dict[str, Any]) -> None:
    rows = results["latency"]["rows"]
    for position, function in enumerate(("get_funding_rate", "get_all_perp_markets"), start=1):
        ax = fig.add_subplot(1, 2, position)
        labels = [f"{r['api']}\n{r['cache']}" for r in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r[function]["p50"] for r in rows], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [r[function]["p99"] for r in rows], 0.4, label="p99")
        ax.set_xticks(list(xs), labels, fontsize=6, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("µs per call")
        ax.set_title(function)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _plot_cold(fig: Any, results: dict[str, Any]) -> None:
    rows = results["cold_start"]["rows"]
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['path']}, {r['markets']} markets" for r in rows]
    xs = range(len(rows))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["process_to_first_rate_s"] for r in rows],
        0.4,
        label="process start → first funding rate",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r["client_ready_s"] for r in rows],
        0.4,
        label="connect → client ready",
    )
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("seconds (median)")
    ax.set_title("Cold start")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()


def _plot_limit(fig: Any, results: dict[str, Any]) -> None:
    case = results["provider_limit"]
    runs = case["runs"]
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['path']}, N={r['engines']}" for r in runs]
    xs = range(len(runs))
    ax.bar(
        [x - 0.2 for x in xs], [engine_errors(r) for r in runs], 0.4, label="engine-visible errors"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r["sim"]["rate_limited"] for r in runs],
        0.4,
        label="429 answers sent by the provider",
    )
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("symlog")
    ax.set_ylabel("count")
    ax.set_title(f"Provider limited to {case['rps']:g} requests/s")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
