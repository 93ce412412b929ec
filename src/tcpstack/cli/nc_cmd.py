"""`tcpstack nc`: netcat on tcpstack, with the kernel of a namespace as the peer.

    tcpstack nc --netns tcpstack-0 198.18.0.1 8080 < request     # connect
    tcpstack nc --netns tcpstack-0 -l 7000 > upload              # listen, one connection

stdin goes to the connection and the connection to stdout; EOF on stdin
half-closes the connection (a FIN, like ``nc -N``) and nc keeps reading until
the peer closes. nc brings up its own stack on its own TUN device in the
namespace (created if missing, then removed on exit), so it works beside a
running ``tcpstack up``: unless ``--addr`` says otherwise, the device gets the
first free 198.18.N.0/24 (kernel 198.18.N.1, nc 198.18.N.2); ``-v`` prints
which. The device uses virtio-net offload, so the kernel hands over 64 KiB
TSO super-segments (``--no-offload`` for plain MSS-sized packets). Exit status: 0 after a clean close, 1 when the connection is refused,
reset or times out (with a one-line reason on stderr), 77 without the
privileges (root, or CAP_NET_ADMIN and CAP_SYS_ADMIN), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import signal
import sys
import threading
import time
from typing import Any

from ..api import socket as tsocket
from ..pcap import PcapWriter
from ..runtime.host import Host
from ..runtime.tun import DEFAULT_NETNS
from .tunables import add_tunable_args, config_from_args

EX_NOPERM = 77
_CHUNK = 1 << 16
_CLOSE_WAIT_S = 2.0  # after close(): time allowed for the last FIN/ACK exchange


class NcError(Exception):
    """A failure to report in one line on stderr (exit status 1)."""


def _port(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < p < 65536:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {p}")
    return p


def _timeout(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if t <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return t


def register(sub: Any) -> None:
    p = sub.add_parser(
        "nc", help="netcat over tcpstack: connect to or listen for the kernel in a namespace",
        description="Connect to HOST PORT (or with -l accept one connection on PORT) with tcpstack "
        "on its own TUN device in a network namespace; relay stdin to the connection and the "
        "connection to stdout. EOF on stdin sends a FIN (half-close, like nc -N). Needs root.",
        epilog="Exit status: 0 clean close; 1 refused, reset or timed out (reason on stderr); "
        "77 without privileges; 2 bad arguments.",
        usage="tcpstack nc [options] HOST PORT\n       tcpstack nc [options] -l [ADDR] PORT",
    )
    p.add_argument("target", nargs="+", metavar="[HOST] PORT",
                   help="HOST PORT to connect to; with -l: PORT (or ADDR PORT) to listen on")
    p.add_argument("-l", "--listen", action="store_true", help="listen for one connection instead of connecting")
    p.add_argument("--netns", default=DEFAULT_NETNS, metavar="NAME",
                   help=f"network namespace (default {DEFAULT_NETNS}; created if missing, then removed)")
    p.add_argument("--addr", metavar="ADDR",
                   help="nc's own address (default: 198.18.N.2 in the first free 198.18.N.0/24)")
    p.add_argument("--kernel-addr", metavar="ADDR/LEN",
                   help="the kernel's address on nc's device (default: .1 of --addr's /24)")
    p.add_argument("-6", "--ipv6", action="store_true",
                   help="IPv6 too: the device gets the subnet's fd00:198:18::N:1/112 (implied by an IPv6 HOST)")
    p.add_argument("-p", "--source-port", type=_port, metavar="PORT", help="local port to connect from")
    p.add_argument("-w", "--timeout", type=_timeout, metavar="SECONDS",
                   help="give up on a connect, or on a connection idle in both directions, after SECONDS")
    p.add_argument("--pcap", metavar="FILE", help="write every packet nc's stack sends and receives to FILE")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="read plain MSS-sized packets from the TUN device instead of the kernel's "
                   "64 KiB TSO/GRO super-segments (virtio-net offload, on by default)")
    p.add_argument("-v", "--verbose", action="store_true", help="say what is happening on stderr")
    add_tunable_args(p)
    p.set_defaults(func=run)


def _addresses(args: argparse.Namespace, ipv6: bool) -> dict[str, Any]:
    """Host() keyword arguments for the addresses asked for."""
    if args.addr is None and args.kernel_addr is None:
        return {"subnet": "auto", "ipv6": ipv6}
    if ipv6:
        raise SystemExit("tcpstack nc: --addr/--kernel-addr set IPv4 addresses; IPv6 uses the automatic subnet")
    try:
        if args.addr is not None:
            stack = ipaddress.IPv4Address(args.addr)
            if args.kernel_addr is not None:
                kernel = ipaddress.IPv4Interface(args.kernel_addr)
            else:
                net = ipaddress.IPv4Network(f"{stack}/24", strict=False)
                first = net.network_address + 1
                kernel = ipaddress.IPv4Interface(f"{first if first != stack else first + 1}/24")
        else:
            kernel = ipaddress.IPv4Interface(args.kernel_addr)
            hosts = kernel.network.hosts()
            stack = next(h for h in hosts if h != kernel.ip)
    except (ValueError, StopIteration) as exc:
        raise SystemExit(f"tcpstack nc: bad address: {exc}") from None
    return {"kernel_addr4": str(kernel), "stack_addr4": str(stack)}


def run(args: argparse.Namespace) -> int:
    if args.listen:
        if len(args.target) not in (1, 2):
            raise SystemExit("tcpstack nc: -l takes PORT or ADDR PORT")
        host_arg, port_text = (args.target[0], args.target[1]) if len(args.target) == 2 else ("", args.target[0])
    else:
        if len(args.target) != 2:
            raise SystemExit("tcpstack nc: give HOST PORT (or -l PORT to listen)")
        host_arg, port_text = args.target
    try:
        port = _port(port_text)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"tcpstack nc: {exc}") from None
    ipv6 = ":" in host_arg or args.ipv6
    cfg = config_from_args(args)
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the device and a namespace we
    # created are removed on the way out.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    pcap = PcapWriter(args.pcap) if args.pcap else None
    try:
        host = Host(args.netns, config=cfg, pcap=pcap, offload=args.offload, **_addresses(args, ipv6))
    except PermissionError as exc:
        print(f"tcpstack nc: {exc}", file=sys.stderr)
        return EX_NOPERM
    except (OSError, ValueError) as exc:
        print(f"tcpstack nc: cannot bring the stack up in namespace {args.netns!r}: {exc}", file=sys.stderr)
        if pcap is not None:
            pcap.close()
        return 1
    try:
        if args.verbose:
            stack_addr = " ".join(a for a in (host.stack_addr4, host.stack_addr6) if a)
            kernel = " ".join(a for a in (host.kernel_addr4, host.kernel_addr6) if a)
            _say(f"stack {stack_addr} on {host.ifname} in netns {host.netns} (kernel side {kernel})")
        return _session(args, host, host_arg, port, ipv6)
    except NcError as exc:
        print(f"tcpstack nc: {exc}", file=sys.stderr)
        return 1
    finally:
        host.close()
        if pcap is not None:
            pcap.close()


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _say(msg: str) -> None:
    print(f"tcpstack nc: {msg}", file=sys.stderr, flush=True)


def _session(args: argparse.Namespace, host: Host, host_arg: str, port: int, ipv6: bool) -> int:
    family = tsocket.AF_INET6 if ":" in host_arg or (args.listen and ipv6) else tsocket.AF_INET
    wait = args.timeout
    if args.listen:
        lst = tsocket.socket(family, driver=host)
        lst.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_REUSEADDR, 1)
        lst.bind((host_arg, port))
        lst.listen(1)
        if args.verbose:
            _say(f"listening on {lst.getsockname()[0]} port {port}")
        lst.settimeout(wait)
        try:
            conn, peer = lst.accept()
        except TimeoutError:
            raise NcError(f"no connection on port {port} within {wait:g} s: timed out") from None
        finally:
            lst.close()
        if args.verbose:
            _say(f"connection from {peer[0]} port {peer[1]}")
    else:
        conn = tsocket.socket(family, driver=host)
        if args.source_port:
            conn.bind(("", args.source_port))
        conn.settimeout(wait)
        try:
            conn.connect((host_arg, port))
        except TimeoutError:
            raise NcError(f"connect to {host_arg} port {port}: timed out after {wait:g} s") from None
        except ConnectionRefusedError:
            raise NcError(f"connect to {host_arg} port {port}: Connection refused") from None
        except tsocket.gaierror as exc:
            raise NcError(f"{exc.args[-1]}") from None
        except OSError as exc:
            raise NcError(f"connect to {host_arg} port {port}: {exc.strerror or exc}") from None
        if args.verbose:
            _say(f"connected to {host_arg} port {port} from port {conn.getsockname()[1]}")
    return _relay(conn, wait, args.verbose)


def _relay(conn: tsocket.socket, wait: float | None, verbose: bool) -> int:
    """stdin -> conn (FIN at EOF) in a thread; conn -> stdout here, until the peer's FIN."""
    state = {"last": time.monotonic(), "sent": 0, "received": 0}
    errors: list[BaseException] = []
    stdin_done = threading.Event()

    def pump_stdin() -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = -1
        try:
            while fd >= 0:
                data = os.read(fd, _CHUNK)
                if not data:
                    break
                conn.sendall(data)
                state["sent"] += len(data)
                state["last"] = time.monotonic()
            conn.shutdown(tsocket.SHUT_WR)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            stdin_done.set()

    # The stdin thread may stay blocked in read() after the peer closed: a daemon.
    threading.Thread(target=pump_stdin, name="nc-stdin", daemon=True).start()
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    slice_s = min(wait, 1.0) if wait else None
    conn.settimeout(slice_s)
    t0 = time.monotonic()
    status = 0
    try:
        while True:
            try:
                data = conn.recv(_CHUNK)
            except TimeoutError:
                if errors:
                    break
                if wait and time.monotonic() - state["last"] >= wait:
                    raise NcError(f"connection idle for {wait:g} s: timed out") from None
                continue
            if not data:
                break
            state["received"] += len(data)
            state["last"] = time.monotonic()
            if out is not None:
                try:
                    out.write(data)
                    out.flush()
                except BrokenPipeError:
                    break
        # The peer's FIN ends only its direction: keep sending until stdin's
        # EOF (OpenBSD nc does the same), bounded by -w's idle timeout.
        while not errors and not stdin_done.wait(slice_s):
            if wait and time.monotonic() - state["last"] >= wait:
                raise NcError(f"connection idle for {wait:g} s: timed out")
        if errors:
            raise errors[0]
    except ConnectionResetError:
        raise NcError("connection reset by peer") from None
    except BrokenPipeError:
        raise NcError("connection closed by peer while sending (broken pipe)") from None
    except TimeoutError as exc:
        raise NcError(f"connection timed out: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENETDOWN:
            raise NcError(f"the stack stopped: {exc.strerror}") from None
        raise NcError(str(exc)) from None
    finally:
        c = conn.connection
        with contextlib.suppress(OSError):
            conn.close()
        # Let the closing handshake finish before the device goes away.
        if c is not None:
            conn.driver.wait(lambda: c.state.value in ("TIME-WAIT", "CLOSED"), _CLOSE_WAIT_S)
        if verbose:
            el = max(time.monotonic() - t0, 1e-9)
            _say(f"{state['sent']} bytes sent, {state['received']} received in {el:.2f} s "
                 f"({(state['sent'] + state['received']) / el / 1e6:.1f} MB/s)")
    return status
