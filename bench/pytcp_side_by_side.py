"""tcpstack next to PyTCP, the same scenarios against the same kernel programs (issue 8; run as root).

    .venv/bin/python bench/pytcp_side_by_side.py                  # table
    .venv/bin/python bench/pytcp_side_by_side.py --json           # one JSON object
    .venv/bin/python bench/pytcp_side_by_side.py --only bulk-in,connect --bytes 5000000

PyTCP (PyPI ``pmd-pytcp``, default 0.3.8) is installed into a virtual
environment of its own (``--venv``, default ``~/.cache/tcpstack/pmd-pytcp-VERSION``;
made once, reused afterwards), never into the project's.  It runs on a TAP
device (it does its own ARP) in a network namespace this script creates and
removes (``tcpstack-pytcp-PID``; kernel 198.18.0.1/24, PyTCP 198.18.0.2); each
scenario is one ``bench/pytcp/pytcp_peer.py`` process in that namespace.

The kernel side is exactly what ``tcpstack bench`` uses: the ``PEER``
program of src/tcpstack/runtime/bench.py, with the same byte counts, seed,
timing points and sha256 check.  tcpstack's figures, and the kernel<->kernel
reference over veth, come from ``tcpstack bench SCENARIO --json`` run by this
script in the same invocation:

    bulk-in          kernel sends --bytes to the stack; the stack times accept -> EOF   (tun-bulk --direction in)
    bulk-in-bigwin   the same with PyTCP's receive window raised to Linux's tcp_rmem max
                     (tcp.rcv_wnd_max=6291456): PyTCP's default is 64 KiB and it sends no
                     window update when the application drains a closed window
    bulk-out         the stack sends --bytes; the kernel times accept -> EOF            (tun-bulk --direction out)
    connect          --count sequential connect+close from a kernel client              (tun-connect)
    rr               --rr-count 1-byte round trips on one connection, median            (tun-rr)
    idle             --idle-connections idle connections: the stack's CPU over --idle-window (idle)

PyTCP runs with its defaults except where a row says otherwise; tcpstack
without TUN offloads (as PyTCP has none).  A PyTCP scenario that fails or
does not finish in --timeout seconds is reported as such, with what it did
get through, never as a number it did not reach.  Everything is bounded:
each step by a timeout, the namespace removed in a ``finally`` (Ctrl-C and
SIGTERM included).  Not part of ``make test`` (pytest collects tests/ only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tcpstack.runtime.bench import Peer, expected_sha256  # noqa: E402

PYTCP_PEER = Path(__file__).resolve().parent / "pytcp" / "pytcp_peer.py"
TAP = "tap0"
KERNEL_ADDR, PYTCP_ADDR = "198.18.0.1", "198.18.0.2"
PORT = 5001
BIG_WINDOW = 6_291_456  # Linux's default tcp_rmem max
SCENARIOS = ("bulk-in", "bulk-in-bigwin", "bulk-out", "connect", "rr", "idle")


# ---------------------------------------------------------------------------- PyTCP's virtualenv
def default_venv(version: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tcpstack" / f"pmd-pytcp-{version}"


def ensure_venv(venv: Path, version: str) -> Path:
    """The venv's python with pmd-pytcp==version importable (created and installed on first use)."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m, pmd_pytcp; print(m.version('pmd-pytcp'))"]
    if py.exists():
        p = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
        if p.returncode == 0 and p.stdout.strip() == version:
            return py
    print(f"installing pmd-pytcp=={version} into {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"pmd-pytcp=={version}"], check=True, timeout=600)
    p = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
    if p.returncode != 0:
        raise SystemExit(f"pmd-pytcp {version} does not import on {sys.version.split()[0]}: {p.stderr.strip()[-500:]}")
    return py


# ---------------------------------------------------------------------------- namespace + TAP
def ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if p.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {p.stderr.strip()}")


@contextlib.contextmanager
def tap_namespace() -> Iterator[str]:
    """A namespace with a persistent TAP device, the kernel's side at KERNEL_ADDR/24 (removed at the end)."""
    ns = f"tcpstack-pytcp-{os.getpid()}"
    try:
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        ip("-n", ns, "addr", "add", f"{KERNEL_ADDR}/24", "dev", TAP)
        ip("-n", ns, "link", "set", "dev", TAP, "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=15, check=False)


def tap_packets(ns: str) -> int:
    """Frames through the TAP so far, both directions."""
    p = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", TAP], capture_output=True, text=True,
                       timeout=15, check=True)
    st = json.loads(p.stdout)[0]["stats64"]
    return int(st["rx"]["packets"]) + int(st["tx"]["packets"])


class PyTcp:
    """One pytcp_peer.py process in the namespace; READY once PyTCP owns its address."""

    def __init__(self, py: Path, ns: str, mode: str, *args: Any, deadline: float, sysctls: tuple[str, ...] = ()):
        cmd = ["ip", "netns", "exec", ns, str(py), str(PYTCP_PEER), "--tap", TAP, "--addr", f"{PYTCP_ADDR}/24",
               "--deadline", str(deadline)]
        for s in sysctls:
            cmd += ["--sysctl", s]
        self.proc = subprocess.Popen([*cmd, mode, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)

    def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError(f"PyTCP said nothing in {timeout:.0f} s")
        text = self.proc.stdout.readline()
        if not text:
            self.proc.kill()
            assert self.proc.stderr is not None
            raise OSError(f"PyTCP exited: {self.proc.stderr.read().strip()[-1500:]}")
        return text.strip()

    def ready(self, timeout: float = 60) -> None:
        got = self.line(timeout)
        if got != "READY":
            raise OSError(f"PyTCP: expected READY, got {got!r}")

    def result(self, timeout: float) -> dict[str, Any]:
        return json.loads(self.line(timeout))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _run(fn: Any, *args: Any) -> dict[str, Any]:
    """A PyTCP scenario; any failure becomes {'error': ...}, never a number."""
    try:
        return fn(*args)
    except (OSError, TimeoutError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------------------- PyTCP scenarios
def pytcp_bulk_in(py: Path, ns: str, a: argparse.Namespace, sysctls: tuple[str, ...] = ()) -> dict[str, Any]:
    want = expected_sha256(a.bytes, a.seed)
    pk0 = tap_packets(ns)
    s = PyTcp(py, ns, "recv", PORT, deadline=a.timeout, sysctls=sysctls)
    try:
        s.ready()
        with Peer(ns, "send", PYTCP_ADDR, PORT, a.bytes, a.seed) as k:
            r = s.result(a.timeout + 30)
            with contextlib.suppress(OSError, TimeoutError, ValueError):
                k.result(10)
    finally:
        s.close()
    r["packets"] = tap_packets(ns) - pk0
    r["complete"] = r.get("sha256") == want and r.get("n") == a.bytes
    return r


def pytcp_bulk_out(py: Path, ns: str, a: argparse.Namespace) -> dict[str, Any]:
    want = expected_sha256(a.bytes, a.seed)
    pk0 = tap_packets(ns)
    with Peer(ns, "recv", KERNEL_ADDR, PORT) as k:
        k.ready()
        s = PyTcp(py, ns, "send", KERNEL_ADDR, PORT, a.bytes, a.seed, deadline=a.timeout)
        try:
            s.ready()
            try:
                kr = k.result(a.timeout + 30)
            except (OSError, TimeoutError) as exc:
                kr = {"error": f"kernel receiver: {exc}"}
            r = s.result(30)
        finally:
            s.close()
    out = {"n": kr.get("n"), "secs": kr.get("secs"), "cpu_s": r.get("cpu_s"), "packets": tap_packets(ns) - pk0,
           "complete": kr.get("sha256") == want and kr.get("n") == a.bytes}
    if "error" in r or "error" in kr:
        out["error"] = r.get("error") or kr.get("error")
    return out


def pytcp_connect(py: Path, ns: str, a: argparse.Namespace) -> dict[str, Any]:
    s = PyTcp(py, ns, "acceptclose", PORT, a.count, deadline=a.timeout)
    try:
        s.ready()
        with Peer(ns, "connect", PYTCP_ADDR, PORT, a.count) as k:
            kr = k.result(a.timeout + 30)
        r = s.result(30)
    finally:
        s.close()
    return {"ok": kr["ok"], "failed": kr["failed"], "secs": kr["secs"], "accepted": r.get("accepted"),
            "cpu_s": r.get("cpu_s"), "errors": kr.get("errors") or None, "error": r.get("error"),
            "complete": kr["ok"] == a.count and r.get("accepted") == a.count}


def pytcp_rr(py: Path, ns: str, a: argparse.Namespace) -> dict[str, Any]:
    s = PyTcp(py, ns, "echo", PORT, deadline=a.timeout)
    try:
        s.ready()
        with Peer(ns, "rr", PYTCP_ADDR, PORT, a.rr_count) as k:
            kr = k.result(a.timeout + 30)
        r = s.result(30)
    finally:
        s.close()
    return {"round_trips": kr["count"], "ok": kr["ok"], "median_us": kr["median_us"], "p99_us": kr["p99_us"],
            "cpu_s": r.get("cpu_s"), "error": r.get("error"), "complete": kr["ok"] == a.rr_count}


def pytcp_idle(py: Path, ns: str, a: argparse.Namespace) -> dict[str, Any]:
    n = a.idle_connections
    s = PyTcp(py, ns, "hold", PORT, n, a.idle_window, deadline=a.timeout + a.idle_window)
    k = None
    try:
        s.ready()
        k = Peer(ns, "hold", PYTCP_ADDR, PORT, n, stdin=True)
        held = k.result(a.timeout)
        mark = s.result(a.timeout + a.idle_window)
        if not mark.get("idle_done"):
            return {"error": mark.get("error", f"unexpected {mark}"), "connected": held.get("connected")}
        k.send("go\n")
        kr = k.result(a.timeout)
        r = s.result(30)
    finally:
        if k is not None:
            k.close()
        s.close()
    cpu = r.get("cpu_s")
    win = r.get("window_s")
    return {"connections": n, "connected": held["connected"], "alive_after": kr.get("alive"),
            "window_s": win, "cpu_s": cpu, "cpu_pct": round(cpu / win * 100, 3) if cpu is not None and win else None,
            "error": r.get("error"), "complete": held["connected"] == n and kr.get("alive") == n}


# ---------------------------------------------------------------------------- tcpstack (the project's own bench)
def tcpstack_bench(*args: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "tcpstack.cli.main", "bench", *args, "--json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"tcpstack bench {' '.join(args)}: no answer in {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": f"tcpstack bench {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-500:]}"}
    return json.loads(p.stdout)


# ---------------------------------------------------------------------------- figures and the table
def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def figures(name: str, py: dict[str, Any], ts: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """One row: the comparable figure for each side, with the unit and which way is better."""
    row: dict[str, Any] = {"scenario": name, "pytcp_raw": py, "tcpstack_raw": ts}
    if name.startswith("bulk"):
        n, secs = py.get("n"), py.get("secs")
        row.update(unit="MB/s", higher_is_better=True,
                   pytcp=_r(n / secs / 1e6) if n and secs else None,
                   tcpstack=ts.get("mb_per_s"), kernel=ts.get("kernel_mb_per_s"))
        if py.get("cpu_s") and py.get("packets"):
            row["pytcp_cpu_us_per_packet"] = round(py["cpu_s"] / py["packets"] * 1e6, 1)
    elif name == "connect":
        ok, secs = py.get("ok"), py.get("secs")
        row.update(unit="/s", higher_is_better=True, pytcp=_r(ok / secs, 1) if ok and secs else None,
                   tcpstack=ts.get("per_s"), kernel=ts.get("kernel_per_s"))
    elif name == "rr":
        row.update(unit="us", higher_is_better=False, pytcp=_r(py.get("median_us"), 1),
                   tcpstack=ts.get("median_us"), kernel=ts.get("kernel_median_us"))
    elif name == "idle":
        row.update(unit="% CPU", higher_is_better=False, pytcp=py.get("cpu_pct"),
                   tcpstack=ts.get("process_cpu_pct"), kernel=None)
    p, t = row.get("pytcp"), row.get("tcpstack")
    # tcpstack/PyTCP as a speed-up: > 1 means tcpstack is better, whichever way the unit points.
    if p and t:
        row["ratio"] = round(t / p if row["higher_is_better"] else p / t, 2)
    else:
        row["ratio"] = None
    row["pytcp_complete"] = bool(py.get("complete")) and not py.get("error")
    row["pytcp_error"] = py.get("error")
    row["tcpstack_error"] = ts.get("error")
    return row


LABELS = {
    "bulk-in": "bulk kernel -> stack",
    "bulk-in-bigwin": "  PyTCP rcv window 6 MiB",
    "bulk-out": "bulk stack -> kernel",
    "connect": "connect+close",
    "rr": "1-byte round trip (median)",
    "idle": "idle connections' CPU",
}


def fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2g} {unit}" if abs(v) < 1 else f"{v:,.1f} {unit}"
    return f"{v:,} {unit}"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = ("scenario", "PyTCP", "tcpstack", "kernel<->kernel", "tcpstack/PyTCP")
    body = []
    notes = []
    for r in rows:
        py = fmt(r.get("pytcp"), r.get("unit", ""))
        if not r["pytcp_complete"]:
            raw = r["pytcp_raw"]
            why = r["pytcp_error"] or "incomplete"
            if r["scenario"].startswith("bulk") and raw.get("n"):
                why += f" ({raw['n'] / 1e6:.1f} of {meta['bytes'] / 1e6:.0f} MB in {raw.get('secs', 0):.0f} s)"
            py += " *" if r.get("pytcp") is not None else ""
            py = py if r.get("pytcp") is not None else "failed *"
            notes.append(f"* {LABELS[r['scenario']].strip()}: PyTCP {why}")
        if r.get("tcpstack_error"):
            notes.append(f"tcpstack {r['scenario']}: {r['tcpstack_error']}")
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
        body.append((LABELS[r["scenario"]], py, fmt(r.get("tcpstack"), r.get("unit", "")),
                     fmt(r.get("kernel"), r.get("unit", "")), ratio))
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(head), line(tuple("-" * w for w in widths)), *map(line, body)]
    cpu = [f"{LABELS[r['scenario']].strip()} {r['pytcp_cpu_us_per_packet']} us" for r in rows
           if r.get("pytcp_cpu_us_per_packet")]
    if cpu:
        out.append("PyTCP CPU per frame on the TAP (data + ACKs): " + "; ".join(cpu))
    out.append(f"tcpstack/PyTCP > 1: tcpstack is better (faster, lower latency or less CPU). "
               f"bulk {meta['bytes']:,} B, {meta['count']} connects, {meta['rr_count']} round trips, "
               f"{meta['idle_connections']} idle connections for {meta['idle_window']} s; "
               f"pmd-pytcp {meta['pytcp_version']} on Python {meta['python']}, no TUN offloads")
    out += notes
    return "\n".join(out)


# ---------------------------------------------------------------------------- main
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=20_000_000, help="bulk bytes (default 20000000)")
    ap.add_argument("--count", type=int, default=300, help="sequential connect+close (default 300)")
    ap.add_argument("--rr-count", type=int, default=1_000, help="1-byte round trips (default 1000)")
    ap.add_argument("--idle-connections", type=int, default=100, help="idle connections (default 100)")
    ap.add_argument("--idle-window", type=float, default=5.0, help="idle window in seconds (default 5)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds each PyTCP scenario may take once connected (default 60)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--pytcp-version", default="0.3.8", help="pmd-pytcp version from PyPI (default 0.3.8)")
    ap.add_argument("--venv", type=Path, default=None, help="PyTCP's virtualenv (default ~/.cache/tcpstack/pmd-pytcp-VERSION)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = ap.parse_args()
    only = [s for s in a.only.split(",") if s]
    if bad := [s for s in only if s not in SCENARIOS]:
        ap.error(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)}")
    if os.geteuid() != 0:
        print("pytcp_side_by_side.py needs root (network namespaces, TAP and TUN devices)", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so the finally blocks remove the namespace and children.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    py = ensure_venv(a.venv or default_venv(a.pytcp_version), a.pytcp_version)
    started = time.monotonic()

    def say(msg: str) -> None:
        if not a.json:
            print(f"[{time.monotonic() - started:5.0f} s] {msg}", file=sys.stderr, flush=True)

    t = a.timeout * 3 + 60
    tcpstack_args = {
        "bulk-in": ("tun-bulk", "--direction", "in", "--bytes", str(a.bytes), "--seed", str(a.seed)),
        "bulk-out": ("tun-bulk", "--direction", "out", "--bytes", str(a.bytes), "--seed", str(a.seed)),
        "connect": ("tun-connect", "--count", str(a.count)),
        "rr": ("tun-rr", "--count", str(a.rr_count)),
        "idle": ("idle", "--connections", str(a.idle_connections), "--window", str(a.idle_window)),
    }
    tcpstack: dict[str, dict[str, Any]] = {}
    for name in only:
        key = "bulk-in" if name == "bulk-in-bigwin" else name
        if key not in tcpstack:
            say(f"tcpstack bench {' '.join(tcpstack_args[key])}")
            tcpstack[key] = tcpstack_bench(*tcpstack_args[key], timeout=t)
    pytcp: dict[str, dict[str, Any]] = {}
    with tap_namespace() as ns:
        runs = {
            "bulk-in": lambda: _run(pytcp_bulk_in, py, ns, a),
            "bulk-in-bigwin": lambda: _run(pytcp_bulk_in, py, ns, a, (f"tcp.rcv_wnd_max={BIG_WINDOW}",)),
            "bulk-out": lambda: _run(pytcp_bulk_out, py, ns, a),
            "connect": lambda: _run(pytcp_connect, py, ns, a),
            "rr": lambda: _run(pytcp_rr, py, ns, a),
            "idle": lambda: _run(pytcp_idle, py, ns, a),
        }
        for name in only:
            say(f"PyTCP {name} (it first claims its address: RFC 5227 probes, ~5-8 s)")
            pytcp[name] = runs[name]()
    rows = [figures(n, pytcp[n], tcpstack["bulk-in" if n == "bulk-in-bigwin" else n], a) for n in only]
    meta = {"bytes": a.bytes, "count": a.count, "rr_count": a.rr_count, "idle_connections": a.idle_connections,
            "idle_window": a.idle_window, "pytcp_version": a.pytcp_version, "python": sys.version.split()[0],
            "seed": a.seed, "wall_s": round(time.monotonic() - started, 1)}
    if a.json:
        json.dump({"meta": meta, "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print(render(rows, meta))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); the namespace and the PyTCP and kernel processes are gone",
              file=sys.stderr)
        sys.exit(130)
