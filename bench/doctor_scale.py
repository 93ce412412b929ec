"""How fast is `tcpstack doctor` with 10,000 sockets? (run as root)

    .venv/bin/python bench/doctor_scale.py [--sockets 10000] [--repeat 5]

Creates a network namespace of its own (removed at the end) with one child
process holding about SOCKETS TCP sockets on 127.0.0.1 in a realistic mix:
60% ESTABLISHED (both ends), 20% CLOSE-WAIT + orphaned FIN-WAIT-2 pairs, 20%
TIME-WAIT. Then times, REPEAT times each:

- ``examine(NetnsSource)`` in process, split into read+parse, owner scan
  (/proc/*/fd, once) and analysis;
- the whole command, ``python -m tcpstack.cli.doctor_cmd --netns NS --json``,
  interpreter start included;
- the same on a ``--save-proc`` snapshot of the namespace.

Numbers go to stdout; docs/doctor.md quotes a run. Not a test: wall-clock
time is measured here, never asserted in tests/.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tcpstack.doctor import NetnsSource, SnapshotSource, examine, save_snapshot  # noqa: E402

CHILD = r"""
import os, resource, socket, sys, time
total = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (total + 1000, total + 1000))
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(4096); port = ls.getsockname()[1]
est, cw, tw = int(total * 0.6) // 2, int(total * 0.2) // 2, int(total * 0.2)
keep = []
deadline = time.monotonic() + 120
for _ in range(est):
    c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept(); keep += [c, s]
for _ in range(cw):
    c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept(); s.close(); keep.append(c)
for _ in range(tw):
    c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept(); c.close()
    s.settimeout(5); s.recv(1); s.close()
    if time.monotonic() > deadline:
        break
print("READY", os.getpid(), flush=True)
sys.stdin.read()
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=15, capture_output=True)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f} ms   min {min(values):7.1f}   max {max(values):7.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("doctor_scale.py needs root (it creates a network namespace)", file=sys.stderr)
        return 1
    name = f"tcpstack-doctor-bench-{os.getpid()}"
    ip("netns", "add", name)
    child = None
    tmp = tempfile.mkdtemp(prefix="doctor-bench-")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        t0 = time.monotonic()
        child = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", CHILD, str(args.sockets)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 180)
        line = child.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            print(f"child failed: {line!r}", file=sys.stderr)
            return 1
        print(f"setup: {time.monotonic() - t0:.1f} s")

        source = NetnsSource(name)
        parts: dict[str, list[float]] = {}
        report = None
        for _ in range(args.repeat):
            report = examine(source)
            for k, v in report.timings_ms.items():
                parts.setdefault(k, []).append(v)
        assert report is not None
        print(
            f"sockets seen: {report.total_sockets}  states: "
            + ", ".join(f"{k} {v}" for k, v in report.states.items() if v)
        )
        print(f"owner of CLOSE-WAIT: {report.owners['CLOSE-WAIT'][:1]}")
        print(f"Python {sys.version.split()[0]}, kernel {report.kernel}, {os.cpu_count()} CPUs")
        print(f"\nin process, examine(NetnsSource), {args.repeat} runs:")
        for k, v in parts.items():
            print(f"  {k:26s} {summary(v)}")

        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        cmd = [sys.executable, "-m", "tcpstack.cli.doctor_cmd", "--netns", name, "--json"]
        walls = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=60, env=env, check=True
            )
            walls.append((time.perf_counter() - t) * 1e3)
        total = json.loads(out.stdout)["total_sockets"]
        print(f"\nwhole command (--netns, --json, {total} sockets), {args.repeat} runs:")
        print(f"  {'wall time':26s} {summary(walls)}")

        snap = os.path.join(tmp, "snap")
        save_snapshot(source, snap)
        snap_parts = []
        for _ in range(args.repeat):
            snap_parts.append(examine(SnapshotSource(snap)).timings_ms["total_excluding_interval"])
        print(f"\n--proc snapshot, in process, {args.repeat} runs:")
        print(f"  {'total':26s} {summary(snap_parts)}")
    finally:
        if child is not None:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", name], timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
