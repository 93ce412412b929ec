"""Smoke runs of the real-network bench scenarios at tiny sizes, through the CLI.

They check that each scenario runs, cleans up its namespaces, reports its
fields in --json, and that the data and connections were intact -- never how
fast anything was (DESIGN.md: speed is measured by benchmarks, not asserted).

Like tests/interop, they need root, /dev/net/tun and `ip`: where those are
missing every test FAILS with the reason, unless TCPSTACK_ALLOW_SKIP_INTEROP=1
turns the failures into skips.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from typing import Any

import pytest

from tcpstack.cli import bench_cmd
from tcpstack.cli.main import build_parser

from ..kernel_env import require_kernel

pytestmark = pytest.mark.interop


@pytest.fixture(autouse=True)
def _environment() -> None:
    require_kernel("bench smoke tests")


def _bench_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False).stdout
    mine = f"tcpstack-b{os.getpid()}-"
    return {line.split()[0] for line in out.splitlines() if line.startswith(mine)}


def bench(*argv: str) -> dict[str, Any]:
    """``tcpstack bench ARGV... --json`` through the CLI's run function; the parsed JSON."""
    args = build_parser().parse_args(["bench", *argv, "--json"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert bench_cmd.run(bench_cmd.SCENARIOS[args.scenario], args) == 0
    assert _bench_namespaces() == set(), "a bench left a namespace behind"
    return json.loads(buf.getvalue())


@pytest.mark.parametrize("direction", ["in", "out"])
@pytest.mark.parametrize("offload", [False, True])
def test_tun_bulk(direction: str, offload: bool) -> None:
    r = bench("tun-bulk", "--direction", direction, "--bytes", "300000", *(["--offload"] if offload else []))
    for key in ("direction", "offload", "bytes", "secs", "mb_per_s", "cpu_us_per_mb", "kernel_secs", "kernel_mb_per_s",
                "ratio"):
        assert key in r, key
    assert r["direction"] == direction
    assert r["received"] == r["kernel_received"] == 300_000
    assert r["sha256_equal"] is True
    assert r["kernel_sha256_equal"] is True


def test_tun_connect() -> None:
    r = bench("tun-connect", "--count", "20")
    for key in ("count", "secs", "per_s", "cpu_us_per_conn", "kernel_secs", "kernel_per_s", "ratio"):
        assert key in r, key
    assert r["ok"] == r["accepted"] == r["kernel_ok"] == 20
    assert r["failed"] == 0
    assert r["all_ok"] is True and r["kernel_all_ok"] is True


def test_tun_rr() -> None:
    r = bench("tun-rr", "--count", "50")
    for key in ("median_us", "p99_us", "cpu_us_per_rt", "kernel_median_us", "kernel_p99_us", "ratio"):
        assert key in r, key
    assert r["round_trips"] == 50
    assert r["all_ok"] is True and r["kernel_all_ok"] is True


def test_idle() -> None:
    r = bench("idle", "--connections", "30", "--window", "0.3")
    for key in ("process_cpu_s", "driver_cpu_s", "traced_bytes_per_conn", "rss_bytes_per_conn", "window_s"):
        assert key in r, key
    assert r["kernel_connected"] == r["accepted"] == r["established"] == 30
    assert r["all_ok"] is True
    assert r["alive_after"] == 30


def test_table_renders() -> None:
    """The human table of a scenario has its rows (a fake result: the rendering only)."""
    s = bench_cmd.SCENARIOS["tun-bulk"]
    text = bench_cmd.render(s, {"direction": "in", "mb_per_s": 1.5, "kernel_mb_per_s": 3.0, "ratio": 0.5})
    assert "tcpstack bench tun-bulk" in text
    assert "ratio tcpstack/kernel" in text and "0.5" in text


def test_sim_bulk() -> None:
    r = bench("sim-bulk", "--bytes", "300000", "--repeat", "1")
    assert r["sha256_equal"] and r["segments"] > 300_000 // 1448
    # The simulation run is timed apart from making and hashing the payload.
    assert 0 < r["run_wall_s"] <= r["wall_s"]
    assert r["segments_per_s"] >= r["segments_per_s_whole"] > 0
