"""tcpstack doctor: explain a Linux host's own kernel TCP state.

Reads /proc/net/tcp{,6}, /proc/net/{netstat,snmp,sockstat} and the TCP
sysctls, of this host, of a network namespace, or of a saved /proc snapshot;
counts sockets per RFC 9293 state, finds the processes that own them, and
turns what it sees into findings with current advice. See docs/doctor.md.
"""

from __future__ import annotations

import time
from typing import Any

from .findings import diagnose
from .report import Finding, Report, analyze, collect, collect_counters
from .source import LiveSource, NetnsSource, OwnerMap, SnapshotSource, SourceError, save_snapshot

__all__ = [
    "Finding",
    "LiveSource",
    "NetnsSource",
    "Report",
    "SnapshotSource",
    "SourceError",
    "examine",
    "save_snapshot",
]

MAX_INTERVAL = 300.0


def examine(
    source: Any, interval: float | None = None, top: int = 20, owners: bool = True
) -> Report:
    """Read ``source`` once (plus a second counter sample ``interval`` seconds
    later), map sockets to processes, analyse, diagnose."""
    t0 = time.perf_counter()
    sample = collect(source)
    t1 = time.perf_counter()
    wanted = {s.inode for s in sample.sockets if s.inode}
    owner_map = OwnerMap(source.proc_root if owners else None, wanted)
    t2 = time.perf_counter()
    later = None
    if interval:
        if not 0 < interval <= MAX_INTERVAL:
            raise ValueError(f"interval must be in (0, {MAX_INTERVAL:g}] seconds")
        remaining = interval - (time.monotonic() - sample.taken_monotonic)
        if remaining > 0:
            time.sleep(remaining)
        later = collect_counters(source)
    t3 = time.perf_counter()
    report = analyze(sample, owner_map, source.label, later=later, top=top)
    report.findings = diagnose(report)
    t4 = time.perf_counter()
    report.timings_ms = {
        "read_and_parse": round((t1 - t0) * 1e3, 2),
        "owner_scan": round((t2 - t1) * 1e3, 2),
        "analyze": round((t4 - t3) * 1e3, 2),
        "total_excluding_interval": round(((t4 - t0) - (t3 - t2)) * 1e3, 2),
    }
    return report
