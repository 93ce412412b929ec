"""`tcpstack up`: the stack on a TUN device in a namespace, serving until Ctrl-C.

    tcpstack up --netns tcpstack-0 --serve echo:7 --serve http:80 --root ./site

creates the namespace if it does not exist (an ``ip netns`` one, so
``ip netns exec NAME ...`` works), a TUN device in it with the kernel's
address (198.18.0.1/24 by default) while tcpstack answers for 198.18.0.2,
starts the services on the asyncio API, and runs in the foreground. SIGINT or
SIGTERM resets the open connections, removes the device and, if it created
it, the namespace: nothing is left behind. Exit status: 0 after a clean stop,
77 (EX_NOPERM) without the privileges, 1 on any other setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from typing import Any

from ..pcap import PcapWriter
from ..runtime.aio_driver import AioHost
from ..runtime.control import AioControlServer, default_path
from ..runtime.netns import require_privileges
from ..runtime.tun import DEFAULT_NETNS, KERNEL_ADDR4, KERNEL_ADDR6, STACK_ADDR4, STACK_ADDR6
from ..services import SERVICES, ServiceSpec, parse_spec, start_service
from .tunables import add_tunable_args, config_from_args

EX_NOPERM = 77
DEFAULT_SERVICES = ("echo:7", "discard:9", "chargen:19", "http:80")


def service_spec(text: str) -> ServiceSpec | None:
    if text.strip().lower() == "none":
        return None
    try:
        return parse_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    names = ", ".join(f"{s.name} ({s.default_port})" for s in SERVICES.values())
    p = sub.add_parser(
        "up",
        help="run the stack on a TUN device in a network namespace, with services",
        description="Bring tcpstack up on the real network: a TUN device in a network namespace "
        "(created if missing, removed on exit if created), the kernel on one side and tcpstack on "
        "the other, serving until SIGINT/SIGTERM. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).",
        epilog=f"Services: {names}. http's /bytes/N streams N bytes where byte i is i mod 256.",
    )
    p.add_argument(
        "--netns",
        default=DEFAULT_NETNS,
        metavar="NAME",
        help=f"network namespace (default {DEFAULT_NETNS}; created if it does not exist)",
    )
    p.add_argument(
        "--kernel-addr",
        default=KERNEL_ADDR4,
        metavar="ADDR/LEN",
        help=f"the kernel's IPv4 address on the TUN device (default {KERNEL_ADDR4})",
    )
    p.add_argument(
        "--addr",
        default=STACK_ADDR4,
        metavar="ADDR",
        help=f"tcpstack's IPv4 address, in the kernel's prefix (default {STACK_ADDR4})",
    )
    p.add_argument(
        "--kernel-addr6",
        default=None,
        metavar="ADDR/LEN",
        help=f"the kernel's IPv6 address (e.g. {KERNEL_ADDR6}); enables IPv6",
    )
    p.add_argument(
        "--addr6",
        default=None,
        metavar="ADDR",
        help=f"tcpstack's IPv6 address (default {STACK_ADDR6} when IPv6 is on)",
    )
    p.add_argument(
        "--serve",
        action="append",
        type=service_spec,
        metavar="NAME:PORT",
        help="a service to run (repeatable); default: "
        + " ".join(DEFAULT_SERVICES)
        + "; 'none' for no service",
    )
    p.add_argument("--root", metavar="DIR", help="directory the http service serves files from")
    p.add_argument(
        "--pcap",
        metavar="FILE",
        help="capture every packet crossing the TUN device (with offload: as the device sees "
        "them, TSO/GRO super-segments and partial checksums, like tcpdump on a host with offload)",
    )
    p.add_argument("--mtu", type=int, default=1500, help="MTU of the TUN device (default 1500)")
    p.add_argument(
        "--offload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="virtio-net offload on the TUN device: the kernel completes checksums and cuts "
        "64 KiB super-segments (default on; --no-offload for MTU-sized packets with full checksums)",
    )
    p.add_argument(
        "--control",
        metavar="PATH",
        help="control socket for tcpstack ss/stat/sysctl (default /run/tcpstack/NETNS.sock)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-request log on stderr")
    p.add_argument("--json", action="store_true", help="print the setup as one JSON object")
    add_tunable_args(p)
    p.set_defaults(func=run)


def _fail(msg: str, code: int = 1) -> int:
    prefix = "" if msg.startswith("tcpstack up") else "tcpstack up: "
    print(prefix + msg, file=sys.stderr, flush=True)
    return code


def _services(args: argparse.Namespace) -> list[ServiceSpec]:
    chosen = args.serve if args.serve is not None else [parse_spec(s) for s in DEFAULT_SERVICES]
    specs = [s for s in chosen if s is not None]
    ports: dict[int, ServiceSpec] = {}
    for s in specs:
        if s.port in ports:
            raise SystemExit(f"tcpstack up: {s} and {ports[s.port]} both want port {s.port}")
        ports[s.port] = s
    return specs


def run(args: argparse.Namespace) -> int:
    specs = _services(args)
    cfg = config_from_args(args)
    kernel6, addr6 = args.kernel_addr6, args.addr6
    if addr6 and not kernel6:
        kernel6 = KERNEL_ADDR6
    if kernel6 and not addr6:
        addr6 = STACK_ADDR6
    try:
        for a in (args.kernel_addr, kernel6):
            if a:
                ipaddress.ip_interface(a)
        for a in (args.addr, addr6):
            if a:
                ipaddress.ip_address(a)
    except ValueError as exc:
        return _fail(str(exc))
    if args.root is not None and not os.path.isdir(args.root):
        return _fail(f"--root {args.root!r} is not a directory")
    try:
        require_privileges("a TUN device in a network namespace", net_admin=True, sys_admin=True)
    except PermissionError as exc:
        return _fail(str(exc), EX_NOPERM)
    return asyncio.run(_main(args, specs, cfg, kernel6, addr6))


def _url_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def _try_lines(netns: str, addr: str, specs: list[ServiceSpec]) -> list[str]:
    by_name = {s.name: s for s in specs}
    ns = f"ip netns exec {netns}"
    lines = []
    if "http" in by_name:
        port = by_name["http"].port
        hostport = _url_host(addr) + ("" if port == 80 else f":{port}")
        lines.append(f"{ns} curl http://{hostport}/")
        lines.append(
            f"{ns} curl -o /dev/null -w '%{{speed_download}} bytes/s\\n' http://{hostport}/bytes/100000000"
        )
    if "echo" in by_name:
        lines.append(f"{ns} nc {addr} {by_name['echo'].port}")
    if "chargen" in by_name:
        lines.append(f"{ns} nc {addr} {by_name['chargen'].port} | head -5")
    if not lines:
        lines.append(f"{ns} bash    # a shell on the kernel's side")
    lines.append(f"{ns} ss -tni")
    return lines[:3]


async def _main(
    args: argparse.Namespace,
    specs: list[ServiceSpec],
    cfg: Any,
    kernel6: str | None,
    addr6: str | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    log = (
        None if args.quiet else (lambda line: print(f"[http] {line}", file=sys.stderr, flush=True))
    )
    try:
        pcap = PcapWriter(args.pcap) if args.pcap else None
    except OSError as exc:
        return _fail(f"cannot write --pcap {args.pcap}: {exc}")
    try:
        host = AioHost(
            args.netns,
            kernel_addr4=args.kernel_addr,
            stack_addr4=args.addr,
            kernel_addr6=kernel6,
            stack_addr6=addr6,
            config=cfg,
            mtu=args.mtu,
            pcap=pcap,
            offload=args.offload,
        )
    except PermissionError as exc:
        if pcap is not None:
            pcap.close()
        return _fail(str(exc), EX_NOPERM)
    except (OSError, ValueError) as exc:
        if pcap is not None:
            pcap.close()
        return _fail(str(exc))
    servers = []
    control = None
    try:
        args.control = args.control or default_path(host.netns)
        try:
            control = await AioControlServer.start(host.stack, args.control, host.driver.now)
        except OSError as exc:
            return _fail(f"cannot open the control socket {args.control}: {exc}")
        for spec in specs:
            opts: dict[str, Any] = {}
            if spec.name == "http":
                opts = {"root": args.root, "log": log}
            try:
                servers.append((spec, await start_service(spec, stack=host.driver, **opts)))
            except OSError as exc:
                return _fail(f"cannot serve {spec}: {exc}")
        _announce(args, host, specs, kernel6, addr6)
        await stop.wait()
        return 0
    finally:
        if control is not None:
            control.close()  # removes the socket file
        for _, srv in servers:
            srv.close()
            srv.abort_clients()  # RST: kernel peers learn at once that we are gone
        now = host.driver.now()
        for conn in list(host.stack.conns.values()):
            with contextlib.suppress(OSError):
                conn.abort(now)  # orphans finishing their FIN exchange too
        host.driver.changed()
        # Let connection_lost reach the handlers (they see EOF or a reset and
        # return), so nothing is left for asyncio.run to cancel.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=1.0)
        created = host.created_netns
        host.close()
        if pcap is not None:
            pcap.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if not args.json:
            what = (
                f"device and namespace {host.netns} removed"
                if created
                else f"device removed, namespace {host.netns} kept"
            )
            print(f"tcpstack up: stopped ({', '.join(got) or 'exit'}); {what}", flush=True)


def _offload_text(host: AioHost) -> str:
    dev = host.tun.tun
    if not dev.offload:
        return "off"
    return "checksum+TSO" if host.stack.gso_max else "checksum"


def _announce(
    args: argparse.Namespace,
    host: AioHost,
    specs: list[ServiceSpec],
    kernel6: str | None,
    addr6: str | None,
) -> None:
    addr = args.addr or addr6 or ""
    if args.json:
        print(
            json.dumps(
                {
                    "netns": host.netns,
                    "created_netns": host.created_netns,
                    "device": host.ifname,
                    "mtu": args.mtu,
                    "offload": _offload_text(host),
                    "kernel_addr": args.kernel_addr,
                    "addr": args.addr,
                    "kernel_addr6": kernel6,
                    "addr6": addr6,
                    "services": [{"name": s.name, "port": s.port} for s in specs],
                    "pcap": args.pcap,
                    "control": args.control,
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        return
    made = "created" if host.created_netns else "existing"
    print(
        f"tcpstack up: namespace {host.netns} ({made}), device {host.ifname}, MTU {args.mtu}, "
        f"offload {_offload_text(host)}"
    )
    v6 = f"; kernel {kernel6}, tcpstack {addr6}" if kernel6 else ""
    print(f"  kernel {args.kernel_addr}, tcpstack {args.addr}{v6}")
    width = max((len(f"{_url_host(addr)}:{s.port}") for s in specs), default=0)
    for s in specs:
        extra = f" (root {args.root})" if s.name == "http" and args.root else ""
        print(
            f"  {s.name:<8} {_url_host(addr) + ':' + str(s.port):<{width}}  {SERVICES[s.name].summary}{extra}"
        )
    if args.pcap:
        print(f"  capturing to {args.pcap}")
    print(f"  control {args.control} (tcpstack ss, stat, sysctl)")
    print("Try it (as root, from another terminal):")
    for line in _try_lines(host.netns, addr, specs):
        print(f"  {line}")
    print("Ctrl-C stops it and removes what it created.", flush=True)
