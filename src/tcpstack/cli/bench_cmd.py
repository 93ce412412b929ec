"""`tcpstack bench SCENARIO`: measured scenarios, each with a table and ``--json``.

    tcpstack bench synflood                      # 100,000 spoofed SYNs at 1 Gbit/s, cookies on
    tcpstack bench synflood --set tcp_syncookies=0 --set tcp_max_syn_backlog=128
    tcpstack bench synflood --forged-acks 1000000   # + blind cookie guessing
    tcpstack bench timewait --connections 20000 --json

Every scenario is a :class:`Scenario` in ``SCENARIOS``: a name, its own
arguments, a ``run(args) -> dict`` and the rows of its table.  Adding one
(tun-bulk, tun-connect, tun-rr, idle, sim-bulk, ...) is one more entry; the
common options -- ``--json``, ``--set KEY=VALUE``, ``--seed`` -- come with it.
Speed and memory are measured here and reported, never asserted by tests
(DESIGN.md: "measured by benchmarks, never asserted by timed tests").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..sim.pressure import run_forged_acks, run_port_reuse, run_synflood, run_timewait
from ..tcp import Config
from .tunables import config_from_sets


@dataclass(frozen=True)
class Row:
    key: str  # the JSON field
    label: str  # what the table calls it
    unit: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], dict[str, Any]]
    rows: tuple[Row, ...]


SCENARIOS: dict[str, Scenario] = {}


def scenario(s: Scenario) -> Scenario:
    SCENARIOS[s.name] = s
    return s


def positive_int(text: str) -> int:
    try:
        n = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


# ---------------------------------------------------------------------------- synflood
def _synflood_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--syns", type=positive_int, default=100_000, help="spoofed SYNs (default 100000)")
    p.add_argument("--backlog", type=int, default=128, help="listen(backlog) of the server (default 128)")
    p.add_argument("--rate", default="1gbit", help="flood rate, tc-style (default 1gbit: line rate)")
    p.add_argument("--legit-bytes", type=int, default=100_000, help="bytes the legitimate client sends")
    p.add_argument("--memory", action="store_true",
                   help="also measure the peak memory: a second run under tracemalloc (several times slower)")
    p.add_argument("--forged-acks", type=int, default=0, metavar="N",
                   help="also send N blind ACKs with random cookies and count how many pass (e.g. 1000000)")


def _synflood(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from ..sim.link import parse_rate

    try:
        rate = parse_rate(args.rate)
    except ValueError as exc:
        raise SystemExit(f"tcpstack: {exc}") from None
    kw = dict(config=cfg, backlog=args.backlog, rate_bps=rate, legit_bytes=args.legit_bytes, seed=args.seed)
    out = run_synflood(args.syns, **kw).summary()  # type: ignore[arg-type]
    if args.memory:
        # A second, identical run under tracemalloc, which slows Python several times:
        # the rates above come from the untraced run.
        out["peak_bytes"] = run_synflood(args.syns, measure_memory=True, **kw).peak_bytes  # type: ignore[arg-type]
    if args.forged_acks > 0:
        f = run_forged_acks(args.forged_acks, seed=args.seed)
        out.update(forged_acks=f.tries, forged_accepted=f.accepted, forged_s=f.wall_s, forged_per_s=f.per_s)
    return out


scenario(Scenario(
    name="synflood",
    help="a SYN flood from spoofed sources against a listener, with a legitimate client in the middle",
    description="Spoofed SYNs from 198.19.0.0/16 at line rate against a listener (backlog 128) in the "
    "simulator, while a legitimate client connects and sends data. Shows whether it connected on its first "
    "SYN (SYN cookies) or needed retransmissions, how far the SYN queue grew, and how many SYNs the stack "
    "handles per second of CPU. Server tunables with --set (e.g. tcp_syncookies=0).",
    add_arguments=_synflood_args,
    run=_synflood,
    rows=(
        Row("syns", "spoofed SYNs"),
        Row("flood_ms", "flood duration (virtual)", "ms"),
        Row("syns_per_s", "SYNs handled per second (server receive)", "/s"),
        Row("syncookies", "tcp_syncookies"),
        Row("syn_queue_limit", "SYN queue limit"),
        Row("syn_queue_max", "SYN queue high-water mark"),
        Row("syncookies_sent", "TcpExtSyncookiesSent"),
        Row("syncookies_recv", "TcpExtSyncookiesRecv"),
        Row("listen_drops", "TcpExtListenDrops"),
        Row("legit_connected", "legitimate client connected"),
        Row("legit_connect_ms", "  connect time (virtual)", "ms"),
        Row("legit_syn_transmissions", "  SYNs it sent"),
        Row("legit_bytes_ok", "  data received intact"),
        Row("peak_bytes", "peak memory above set-up (tracemalloc)", "bytes"),
        Row("forged_acks", "forged cookie ACKs"),
        Row("forged_accepted", "  accepted"),
        Row("forged_per_s", "  checked per second (server receive)", "/s"),
        Row("wall_s", "wall-clock time", "s"),
    ),
))


# ---------------------------------------------------------------------------- timewait
def _timewait_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connections", type=positive_int, default=20_000,
                   help="short connections closed by the client (default 20000)")
    p.add_argument("--close-first", choices=["client", "server"], default="client",
                   help="who closes first and so holds TIME-WAIT (server: HTTP/1.0 style)")
    p.add_argument("--established", type=int, default=1_000, metavar="N",
                   help="idle ESTABLISHED connections to measure for comparison (default 1000)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also measure TIME-WAIT memory with tracemalloc over the whole run (slower)")
    p.add_argument("--reuse-ports", type=positive_int, default=64, metavar="N",
                   help="ip_local_port_range size for the tcp_tw_reuse check (default 64)")


def _timewait(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    r = run_timewait(args.connections, config=cfg, close_first=args.close_first,
                     established_sample=args.established, trace_memory=args.tracemalloc, seed=args.seed)
    out = r.summary()
    on = run_port_reuse(args.reuse_ports, tcp_tw_reuse=1, seed=args.seed, config=cfg)
    off = run_port_reuse(args.reuse_ports, tcp_tw_reuse=0, seed=args.seed, config=cfg)
    out.update(
        reuse_ok=on.connected and on.reused_port is not None,
        reuse_port=on.reused_port,
        exhausted_errno=off.errno,
        exhausted_error="EADDRNOTAVAIL" if off.errno == 99 else off.errno,
    )
    return out


scenario(Scenario(
    name="timewait",
    help="many short connections: what TIME-WAIT costs, port reuse and port exhaustion",
    description="A client opens short connections to one server in the simulator and closes first, so "
    "it holds every one in TIME-WAIT. Reports the entries and their memory per entry (and an idle "
    "ESTABLISHED TCB's for comparison), checks they are gone 2*MSL later, that tcp_tw_reuse=1 lets a new "
    "connection take over a TIME-WAIT port when every port is taken, and that without it connect() "
    "fails with EADDRNOTAVAIL.",
    add_arguments=_timewait_args,
    run=_timewait,
    rows=(
        Row("connections", "connections"),
        Row("close_first", "closed first by"),
        Row("timewait_entries", "TIME-WAIT entries (closing side)"),
        Row("other_side_timewait", "TIME-WAIT entries (other side)"),
        Row("bytes_per_timewait", "bytes per TIME-WAIT entry", "B"),
        Row("bytes_per_timewait_traced", "  measured by tracemalloc", "B"),
        Row("record_bytes", "  record + key + port", "B"),
        Row("bytes_per_established", "bytes per ESTABLISHED TCB", "B"),
        Row("timewait_after_2msl", "entries left after 2*MSL"),
        Row("tw_counter", "TcpExtTW"),
        Row("reuse_ok", "tcp_tw_reuse=1 reuses a TIME-WAIT port"),
        Row("exhausted_error", "tcp_tw_reuse=0, range exhausted"),
        Row("wall_s", "wall-clock time", "s"),
    ),
))


# ---------------------------------------------------------------------------- sim-bulk
def _sim_bulk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bytes", type=positive_int, default=50_000_000, help="bytes to transfer (default 50000000)")
    p.add_argument("--delay", type=float, default=1.0, help="one-way delay in ms (default 1)")
    p.add_argument("--checksums", choices=["offload", "python"], default="offload",
                   help="offload: the stacks trust the link and skip per-byte checksums (default); "
                   "python: compute and verify every checksum")
    p.add_argument("--repeat", type=positive_int, default=3, help="runs; the best is reported (default 3)")


def _sim_bulk(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    import time

    from ..sim.link import LinkParams
    from ..sim.transfer import run_transfer

    link = LinkParams(delay_us=int(args.delay * 1000))
    best = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        r = run_transfer(args.bytes, seed=args.seed, link=link, config=cfg, record=False,
                         checksum_offload=args.checksums == "offload", clock=time.perf_counter)
        wall = time.perf_counter() - t
        if best is None or wall < best[0]:
            best = (wall, r)
    assert best is not None
    wall, r = best
    run = r.run_wall_s or wall  # the simulation itself: making and hashing the payload excluded
    return {
        "bytes": args.bytes,
        "checksums": args.checksums,
        "segments": r.segments,
        "wall_s": round(wall, 3),
        "run_wall_s": round(run, 3),
        "segments_per_s": round(r.segments / run),
        "segments_per_s_whole": round(r.segments / wall),
        "us_per_segment": round(run / r.segments * 1e6, 2),
        "wall_mb_per_s": round(args.bytes / run / 1e6, 1),
        "sha256_equal": r.sent_sha256 == r.received_sha256,
        "sim_time_s": r.sim_time_s,
        "goodput_bps_virtual": r.goodput_bps,
    }


scenario(Scenario(
    name="sim-bulk",
    help="bulk transfer in the simulator: simulated segments per wall-clock second",
    description="One client sends --bytes to a server over a clean simulated link; reports how many "
    "segments (both directions) the engine and the simulator process per wall-clock second "
    "(issue 8's target: >= 200,000), the best of --repeat runs.",
    add_arguments=_sim_bulk_args,
    run=_sim_bulk,
    rows=(
        Row("bytes", "bytes transferred"),
        Row("checksums", "checksums"),
        Row("segments", "segments (both directions)"),
        Row("segments_per_s", "segments per wall-clock second (the simulation run)"),
        Row("segments_per_s_whole", "  with making and hashing the payload", ""),
        Row("us_per_segment", "CPU per segment", "us"),
        Row("wall_mb_per_s", "payload per wall-clock second", "MB/s"),
        Row("sha256_equal", "data intact (sha256)"),
        Row("wall_s", "wall-clock time", "s"),
    ),
))


# ---------------------------------------------------------------------------- real network (TUN vs kernel)
# runtime.bench does the measuring; the socket API (a layer above runtime) is passed in from here.
def _tun_bulk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--direction", choices=["in", "out"], default="in",
                   help="in: the kernel sends to tcpstack (default); out: tcpstack sends to the kernel")
    p.add_argument("--offload", action="store_true", help="open the TUN with virtio-net offloads (TSO/GRO, checksums)")
    p.add_argument("--bytes", type=positive_int, default=200_000_000, help="bytes to transfer (default 200000000)")


def _tun_bulk(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from .. import socket as tsocket
    from ..runtime.bench import run_tun_bulk

    return run_tun_bulk(tsocket, args.bytes, direction=args.direction, offload=args.offload, seed=args.seed)


_KERNEL_NOTE = ("In the same run the same kernel program runs against a kernel peer across a veth pair "
                "(MTU 1500) between two namespaces; the ratio is tcpstack/kernel.")

scenario(Scenario(
    name="tun-bulk",
    help="bulk transfer between the kernel and tcpstack over a TUN, against kernel<->kernel over veth",
    description="A kernel socket in a namespace sends --bytes to tcpstack on a TUN device (--direction in) "
    "or receives them from it (out); the receiver times accept to EOF and checks the sha256. " + _KERNEL_NOTE,
    add_arguments=_tun_bulk_args,
    run=_tun_bulk,
    rows=(
        Row("direction", "direction (in: kernel -> tcpstack)"),
        Row("offload", "TUN offloads"),
        Row("bytes", "bytes"),
        Row("sha256_equal", "data intact (sha256)"),
        Row("secs", "tcpstack: time", "s"),
        Row("mb_per_s", "tcpstack: throughput", "MB/s"),
        Row("cpu_us_per_mb", "tcpstack: process CPU per MB (bench's sha256 included)", "us"),
        Row("kernel_sha256_equal", "kernel<->kernel: data intact"),
        Row("kernel_secs", "kernel<->kernel: time", "s"),
        Row("kernel_mb_per_s", "kernel<->kernel: throughput", "MB/s"),
        Row("ratio", "ratio tcpstack/kernel"),
    ),
))


def _tun_connect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=positive_int, default=2_000, help="sequential connect+close (default 2000)")


def _tun_connect(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from .. import socket as tsocket
    from ..runtime.bench import run_tun_connect

    return run_tun_connect(tsocket, args.count, seed=args.seed)


scenario(Scenario(
    name="tun-connect",
    help="connect+close per second from a kernel client to a tcpstack listener, against kernel<->kernel",
    description="One kernel process in the namespace does --count sequential connect+close to a tcpstack "
    "listener whose accept loop closes each accepted socket. " + _KERNEL_NOTE,
    add_arguments=_tun_connect_args,
    run=_tun_connect,
    rows=(
        Row("count", "connects"),
        Row("all_ok", "all connected and accepted"),
        Row("failed", "failed"),
        Row("secs", "tcpstack: time", "s"),
        Row("per_s", "tcpstack: connect+close per second", "/s"),
        Row("cpu_us_per_conn", "tcpstack: process CPU per connection", "us"),
        Row("kernel_all_ok", "kernel<->kernel: all connected"),
        Row("kernel_secs", "kernel<->kernel: time", "s"),
        Row("kernel_per_s", "kernel<->kernel: connect+close per second", "/s"),
        Row("ratio", "ratio tcpstack/kernel"),
    ),
))


def _tun_rr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=positive_int, default=5_000, help="1-byte round trips (default 5000)")


def _tun_rr(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from .. import socket as tsocket
    from ..runtime.bench import run_tun_rr

    return run_tun_rr(tsocket, args.count, seed=args.seed)


scenario(Scenario(
    name="tun-rr",
    help="1-byte ping-pong: a kernel client against a tcpstack echo, against a kernel echo over veth",
    description="A kernel client sends one byte and waits for it back, --count times on one connection "
    "(TCP_NODELAY), to a tcpstack echo server on a TUN; reports the median round trip. " + _KERNEL_NOTE
    + " The ratio is of round trips per second (kernel median / tcpstack median).",
    add_arguments=_tun_rr_args,
    run=_tun_rr,
    rows=(
        Row("count", "round trips"),
        Row("all_ok", "every byte echoed"),
        Row("median_us", "tcpstack: median round trip", "us"),
        Row("p99_us", "tcpstack: 99th percentile", "us"),
        Row("cpu_us_per_rt", "tcpstack: process CPU per round trip", "us"),
        Row("kernel_all_ok", "kernel<->kernel: every byte echoed"),
        Row("kernel_median_us", "kernel<->kernel: median round trip", "us"),
        Row("kernel_p99_us", "kernel<->kernel: 99th percentile", "us"),
        Row("ratio", "ratio tcpstack/kernel (round trips per second)"),
    ),
))


def _idle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connections", type=positive_int, default=1_000,
                   help="idle ESTABLISHED connections from kernel clients (default 1000)")
    p.add_argument("--window", type=float, default=5.0, help="idle window in seconds (default 5)")


def _idle(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from .. import socket as tsocket
    from ..runtime.bench import run_idle

    return run_idle(tsocket, args.connections, window_s=min(max(args.window, 0.1), 60.0), seed=args.seed)


scenario(Scenario(
    name="idle",
    help="N idle connections from kernel clients: tcpstack's CPU while idle and memory per connection",
    description="One kernel process in the namespace opens --connections connections to a tcpstack "
    "listener and holds them; tcpstack's CPU time (process and driver thread) is measured over an idle "
    "--window, and memory per connection as the tracemalloc and RSS growth while accepting divided by N. "
    "Afterwards one byte each way on every connection checks they are all still alive.",
    add_arguments=_idle_args,
    run=_idle,
    rows=(
        Row("connections", "connections"),
        Row("all_ok", "all established"),
        Row("alive_after", "alive after the window"),
        Row("window_s", "idle window", "s"),
        Row("process_cpu_ms", "process CPU in the window", "ms"),
        Row("process_cpu_pct", "  as share of one CPU", "%"),
        Row("driver_cpu_ms", "driver thread CPU in the window (clock ticks)", "ms"),
        Row("traced_bytes_per_conn", "memory per connection (tracemalloc)", "B"),
        Row("rss_bytes_per_conn", "memory per connection (RSS growth)", "B"),
    ),
))


# ---------------------------------------------------------------------------- plumbing
def render(s: Scenario, result: dict[str, Any]) -> str:
    rows = [r for r in s.rows if result.get(r.key) is not None]
    width = max((len(r.label) for r in rows), default=0)
    lines = [f"tcpstack bench {s.name}"]
    for r in rows:
        v = result[r.key]
        if isinstance(v, bool):
            text = "yes" if v else "no"
        elif isinstance(v, float):
            text = f"{v:,.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v):,}"
        elif isinstance(v, int):
            text = f"{v:,}"
        else:
            text = str(v)
        lines.append(f"  {r.label:<{width}}  {text}{' ' + r.unit if r.unit else ''}")
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="measured scenarios: " + ", ".join(SCENARIOS),
                       description="Run a measured scenario and print a table (or --json). "
                       "Virtual-time results are deterministic for a --seed; rates and memory are measured.")
    bsub = p.add_subparsers(dest="scenario", metavar="SCENARIO")
    for s in SCENARIOS.values():
        sp = bsub.add_parser(s.name, help=s.help, description=s.description)
        s.add_arguments(sp)
        sp.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="set a tunable (repeatable), e.g. --set tcp_syncookies=0")
        sp.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
        sp.add_argument("--json", action="store_true", help="one JSON object instead of the table")
        sp.set_defaults(func=lambda args, s=s: run(s, args))

    def usage(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def run(s: Scenario, args: argparse.Namespace) -> int:
    result = s.run(args, config_from_sets(args.set))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(render(s, result))
    return 0
