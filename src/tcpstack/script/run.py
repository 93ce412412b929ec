"""Running a parsed script: the part both targets share.

A runner walks the events in order against a *host* (``virtual.VirtualHost``
drives tcpstack's engine in virtual time; ``kernel.KernelHost`` drives the
Linux kernel through a TUN device in a namespace).  It keeps the semantics
of packetdrill, which is what makes a script portable between the two:

* ``+x`` counts from when the previous event actually completed; two
  inbound packets in a row are anchored to each other's script times.
* A time matches within a tolerance of max(--tolerance_usecs (4 ms),
  --tolerance_percent (12.5 %) of the gap since the previous event); ranges
  ``a~b`` widen it and ``*`` accepts any time.
* Outbound packets are sniffed as soon as the line is reached (an early
  packet is a timing error); packets that belong to no socket the script
  knows are ignored; a packet the script did not list fails only when a
  later ``>`` line meets it.  Consecutive segments are joined to match a
  burst written as one line.
* Sequence and ACK numbers are relative to each side's ISN; the peer's ISN
  is the one its SYN gives.  Outbound TS val/ecr are not checked (unless
  --tcp_ts_tick_usecs); an inbound TS ecr is rewritten to the stack's real
  TS val that the script called that number.
* Options are compared in order (NOP included); ``<...>`` skips them; an
  unlisted window is not checked.
"""

from __future__ import annotations

import builtins
import shlex
import textwrap
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from ..wire.checksum import internet_checksum, pseudo_header_sum
from ..wire.ip import build_ip_tcp
from ..wire.tcp import ACK, AE, CWR, ECE, FIN, OPT_SACK, OPT_TS, PSH, RST, SYN, URG, Opt, Segment
from . import symbols
from .addressing import Addressing, addressing
from .model import (
    BinaryExpr,
    BracedExpr,
    CallExpr,
    CodeAction,
    CommandAction,
    EllipsisExpr,
    Event,
    Expr,
    IntExpr,
    ListExpr,
    OptSpec,
    PacketAction,
    Script,
    StringExpr,
    SyscallAction,
    TimeKind,
    WordExpr,
)

LOCAL_ADDR = "198.18.0.2"  # the stack under test (packetdrill's 192.168.0.1); IPv6: addressing.py
REMOTE_ADDR = "198.18.0.1"  # the script's peer (packetdrill's 192.0.2.1)
BIND_PORT = 8080  # packetdrill's live_bind_port / live_connect_port
FIRST_REMOTE_PORT = 40000  # ports of the peer's connections to a listener
U32 = 0xFFFFFFFF
SNIFF_GRACE_US = 2_000_000  # packetdrill waits 2 s past an outbound packet's time
MAX_WAIT_IDLE_US = 1_000_000  # packetdrill waits at most 1 s for a blocking call to return
NO_TIME = None


class ScriptFailure(Exception):
    """The target did not do what the script says (a test failure, not a bad script)."""


class Outcome(Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the script itself is wrong or uses something unsupported


@dataclass
class RunResult:
    path: str
    target: str  # "tcpstack" or "linux"
    outcome: Outcome
    message: str = ""
    line: int = 0
    events: int = 0
    script_time_us: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS


@dataclass
class Captured:
    """An outbound packet as the host saw it (live values)."""

    time: int  # µs since the script started
    src: str
    dst: str
    seg: Segment


class CallHandle:
    """A system call in progress on the host."""

    __slots__ = ("done", "value", "error", "end", "exc")

    def __init__(self) -> None:
        self.done = False
        self.exc: Exception | None = None  # a usage error raised while running the call
        self.value: Any = None
        self.error: OSError | None = None
        self.end: int | None = None  # live time it returned

    def finish(self, value: Any, error: OSError | None, end: int) -> None:
        self.value, self.error, self.end = value, error, end
        self.done = True


class Host(Protocol):
    target: str

    def configure(self, net: Addressing) -> None: ...  # before anything else: the IP version and addresses
    def start(self) -> None: ...
    def now(self) -> int: ...
    def wait_until(self, t: int) -> None: ...
    def sniff(self, deadline: int | None) -> Captured | None: ...
    def inject(self, packet: bytes) -> None: ...
    def start_call(self, name: str, args: tuple[Any, ...]) -> CallHandle: ...
    def wait_call(self, h: CallHandle, limit: int | None) -> bool: ...
    def tcp_info(self, live_fd: int | None, key: tuple[str, int, str, int] | None) -> dict[str, Any]: ...
    def sysctl(self, key: str, value: str) -> str | None: ...
    def close(self) -> None: ...


class SockState(Enum):
    NEW = "new"
    LISTENING = "listening"
    PASSIVE_PACKET_RECEIVED = "passive: SYN received"
    PASSIVE_SYNACK_SENT = "passive: SYN-ACK sent"
    PASSIVE_SYNACK_ACKED = "passive: SYN-ACK acked"
    ACTIVE_CONNECTING = "active: connect() called"
    ACTIVE_SYN_SENT = "active: SYN sent"
    ACTIVE_SYN_ACKED = "active: SYN-ACK received"


class ScriptSocket:
    """What the runner knows of one connection: script values vs live values."""

    def __init__(self, state: SockState) -> None:
        self.state = state
        self.local: tuple[str, int] | None = None  # live (stack side)
        self.remote: tuple[str, int] | None = None  # live (peer side)
        self.script_local_isn = 0
        self.live_local_isn = 0
        self.script_remote_isn = 0
        self.live_remote_isn = 0
        self.ts_map: dict[int, int] = {}  # script TS val -> live TS val
        self.first_ts: tuple[int, int] | None = None  # (script val, live val)
        self.live_fd: int | None = None
        self.script_fd: int | None = None

    def local_offset(self, syn: bool) -> int:
        """Add to a script sequence number of ours to get the live one."""
        return (self.live_local_isn - self.script_local_isn) & U32 if syn else self.live_local_isn

    def remote_offset(self, syn: bool) -> int:
        return 0 if syn else self.live_remote_isn

    @property
    def key(self) -> tuple[str, int, str, int] | None:
        if self.local is None or self.remote is None:
            return None
        return (self.local[0], self.local[1], self.remote[0], self.remote[1])


@dataclass
class _Timing:
    kind: TimeKind
    start: int  # script time (µs since start), adjusted
    end: int | None
    offset: int


# ----------------------------------------------------------------------------- runner


class Runner:
    def __init__(self, script: Script, host: Host, *, verbose: Callable[[str], None] | None = None,
                 ip_version: str | None = None) -> None:
        """``ip_version``: packetdrill's --ip_version for a script that does not name one itself."""
        self.script = script
        self.host = host
        self.verbose = verbose
        opts = script.options
        self.net = addressing(opts.get("ip_version") or ip_version or "ipv4")
        host.configure(self.net)
        self.tolerance_us = int(opts.get("tolerance_usecs") or 4000)
        self.tolerance_pct = float(opts.get("tolerance_percent") or 12.5)
        self.ts_tick_us = int(opts.get("tcp_ts_tick_usecs") or 0)
        self.sockets: list[ScriptSocket] = []
        self.sut: ScriptSocket | None = None  # packetdrill's socket_under_test
        self.listener: ScriptSocket | None = None  # the socket listen() was last called on
        self.held: list[Captured] = []  # packets of other script connections, met by a later line
        self.fds: dict[int, ScriptSocket | int] = {}  # script fd -> socket (or live fd of a non-socket)
        self.next_remote_port = FIRST_REMOTE_PORT
        self.last_event: Event | None = None
        self.last_time: int | None = None  # adjusted script time of the previous event
        self.prev_inbound_time: int | None = None
        self.pending: tuple[Event, SyscallAction, _Timing, CallHandle, Callable[[Any], int]] | None = None
        self.notes: list[str] = []
        self.event_line = 0
        self.completed_at: int | None = None  # live time the previous event completed

    # -- helpers -----------------------------------------------------------------------
    def fail(self, message: str) -> ScriptFailure:
        return ScriptFailure(message)

    def log(self, text: str) -> None:
        if self.verbose is not None:
            self.verbose(text)

    def tolerance(self, script_usecs: int, last: int | None) -> int:
        tol = self.tolerance_us
        if last is not None:
            dyn = int(self.tolerance_pct / 100.0 * (script_usecs - last))
            if dyn > tol:
                tol = dyn
        return tol

    def verify_time(self, kind: TimeKind, start: int, end: int | None, actual: int, last: int | None,
                    description: str, offset: int = 0) -> None:
        if kind is TimeKind.ANY:
            return
        tol = self.tolerance(start, last)
        if kind in (TimeKind.ABSOLUTE_RANGE, TimeKind.RELATIVE_RANGE):
            assert end is not None
            if actual < start - tol or actual > end + tol:
                if kind is TimeKind.ABSOLUTE_RANGE:
                    raise self.fail(
                        f"timing error: expected {description} in time range {start / 1e6:.6f}~{end / 1e6:.6f} sec "
                        f"but happened at {actual / 1e6:.6f} sec"
                    )
                raise self.fail(
                    f"timing error: expected {description} in relative time range "
                    f"+{(start - offset) / 1e6:.6f}~+{(end - offset) / 1e6:.6f} sec "
                    f"but happened at {(actual - offset) / 1e6:+.6f} sec"
                )
            return
        if actual < start - tol or actual > start + tol:
            raise self.fail(
                f"timing error: expected {description} at {start / 1e6:.6f} sec but happened at "
                f"{actual / 1e6:.6f} sec; tolerance {tol / 1e6:.6f} sec"
            )

    # -- the event loop ----------------------------------------------------------------
    def run(self) -> RunResult:
        script = self.script
        result = RunResult(script.path, self.host.target, Outcome.PASS)
        started = _time.monotonic()
        try:
            if script.init_command is not None:
                self.event_line = 0
                self.run_command(script.init_command.text)
            self.host.start()
            for ev in script.events:
                self.event_line = ev.line
                self.check_pending()
                timing = self.adjust(ev)
                action = ev.action
                if isinstance(action, PacketAction):
                    if action.direction == "<":
                        self.do_inbound(ev, action, timing)
                    else:
                        self.do_outbound(ev, action, timing)
                elif isinstance(action, SyscallAction):
                    self.do_syscall(ev, action, timing)
                elif isinstance(action, CommandAction):
                    self.wait_for(timing, "command")
                    self.run_command(action.text)
                elif isinstance(action, CodeAction):
                    self.wait_for(timing, "data collection for code")
                    self.run_code(action.text)
                if not isinstance(action, PacketAction | SyscallAction):
                    self.completed_at = self.host.now()
                self.last_event = ev
                self.last_time = timing.start
                result.events += 1
            self.event_line = self.pending[0].line if self.pending else self.event_line
            self.finish_pending()
            if script.cleanup_command is not None:
                self.run_command(script.cleanup_command.text)
        except ScriptFailure as exc:
            result.outcome = Outcome.FAIL
            result.line = self.event_line
            result.message = f"{script.path}:{self.event_line}: {exc}"
        except ScriptUsageError as exc:
            result.outcome = Outcome.ERROR
            result.line = self.event_line
            result.message = f"{script.path}:{self.event_line}: {exc}"
        except (ValueError, OSError) as exc:  # a packet the wire refuses, or the host failed (namespace, TUN, privileges)
            result.outcome = Outcome.ERROR
            result.line = self.event_line
            result.message = f"{script.path}:{self.event_line}: {self.host.target} host error: {exc}"
        except Exception as exc:  # a bug in the runner (or the engine): report it, run the other scripts
            import traceback

            where = traceback.extract_tb(exc.__traceback__)[-1]
            result.outcome = Outcome.ERROR
            result.line = self.event_line
            result.message = (f"{script.path}:{self.event_line}: internal error {type(exc).__name__}: {exc} "
                              f"(at {where.filename}:{where.lineno})")
        finally:
            try:
                result.script_time_us = self.host.now()
            except Exception:  # pragma: no cover - a host that never started
                pass
            self.host.close()
        result.wall_s = _time.monotonic() - started
        result.notes = self.notes
        return result

    def adjust(self, ev: Event) -> _Timing:
        """packetdrill's adjust_relative_event_times."""
        t = ev.time
        kind = t.kind
        if kind in (TimeKind.ABSOLUTE, TimeKind.ABSOLUTE_RANGE):
            return _Timing(kind, t.usecs, t.end_usecs, 0)
        if self.last_event is not None and self.last_event.is_inbound and ev.is_inbound:
            assert self.last_time is not None
            offset = self.last_time
        elif ev.is_outbound and self.completed_at is not None:
            # An expected packet counts from when the previous event actually completed,
            # not from when the runner got round to this line (in real time, later).
            offset = self.completed_at
        else:
            # Our own actions (syscalls, injected packets) start from now: a runner that
            # fell behind the script stretches its timeline rather than failing.
            offset = self.host.now()
        end = t.end_usecs + offset if t.end_usecs is not None else None
        return _Timing(kind, t.usecs + offset, end, offset)

    def wait_for(self, timing: _Timing, description: str) -> None:
        """packetdrill's wait_for_event: reach the event's time, then check we are not late."""
        self.host.wait_until(timing.start)
        if self.last_event is not None:
            self.verify_time(timing.kind, timing.start, timing.end, self.host.now(), self.last_time, description,
                             timing.offset)

    # -- commands ----------------------------------------------------------------------
    def run_command(self, text: str) -> None:
        """Backquoted commands: tcpstack understands sysctl settings (and nothing that
        would run a program), written ``sysctl -q net.ipv4.tcp_x=1`` or
        ``echo 1 > /proc/sys/net/ipv4/tcp_x``, one per line or joined by ; or &&."""
        for raw in _split_commands(text):
            try:
                words = shlex.split(raw)
            except ValueError as exc:
                raise ScriptUsageError(f"cannot parse command `{raw}`: {exc}") from None
            if not words:
                continue
            pairs: list[tuple[str, str]] = []
            if words[0] == "sysctl":
                args = [w for w in words[1:] if not w.startswith("-")]
                if not args or any("=" not in a for a in args):
                    raise ScriptUsageError(f"only `sysctl key=value` settings are supported, not `{raw}`")
                for a in args:
                    key, _, value = a.partition("=")
                    pairs.append((key, value))
            elif words[0] == "echo" and len(words) >= 4 and words[-2] == ">" and words[-1].startswith("/proc/sys/"):
                pairs = [(words[-1][len("/proc/sys/"):].replace("/", "."), " ".join(words[1:-2]))]
            else:
                raise ScriptUsageError(
                    f"unsupported command `{raw}`: tcpstack script runs sysctl settings only "
                    "(`sysctl -q net.ipv4.tcp_x=V` or `echo V > /proc/sys/net/ipv4/tcp_x`)"
                )
            for key, value in pairs:
                note = self.host.sysctl(key.strip(), value.strip())
                if note:
                    self.notes.append(note)
                    self.log(f"note: {note}")

    # -- code blocks -------------------------------------------------------------------
    def run_code(self, text: str) -> None:
        sock = self.sut
        if sock is None:
            raise ScriptUsageError("%{ }% needs a socket under test (no socket yet)")
        info = self.host.tcp_info(sock.live_fd, sock.key)
        env: dict[str, Any] = dict(symbols.SYMBOLS)
        env.update(info)
        where = f"{self.script.path}:{self.event_line}"
        try:
            code = compile(textwrap.dedent(text.strip("\n")), where, "exec")
        except SyntaxError:
            try:  # one statement per line, written with any indentation
                code = compile("\n".join(ln.strip() for ln in text.strip().splitlines()), where, "exec")
            except SyntaxError as exc:
                raise ScriptUsageError(f"syntax error in %{{ }}% code: {exc.msg}") from None
        try:
            exec(code, {"__builtins__": _SAFE_BUILTINS}, env)
        except AssertionError as exc:
            names = sorted(n for n in code.co_names if n.startswith("tcpi_") and n in info)
            values = ", ".join(f"{n}={info[n]}" for n in names)
            detail = f" ({exc})" if str(exc) else ""
            raise self.fail(f"assertion failed in %{{ }}% code{detail}: {text.strip()}" +
                            (f"\n  values: {values}" if values else "")) from None
        except NameError as exc:
            raise ScriptUsageError(f"{exc} in %{{ }}% code: {self.host.target} does not provide it") from None

    # -- packets -----------------------------------------------------------------------
    def new_passive_socket(self, spec: PacketAction) -> ScriptSocket:
        """packetdrill's handle_listen_for_script_packet: a SYN to a listener opens a child
        connection from a new remote port (40000, 40001, ... or the port the line names),
        and it becomes the socket under test."""
        listener = self.listener if self.listener is not None and self.listener.state is SockState.LISTENING else None
        sock = ScriptSocket(SockState.PASSIVE_PACKET_RECEIVED)
        port = spec.src_port or self.next_remote_port
        self.next_remote_port = max(self.next_remote_port, port + 1)
        lport = listener.local[1] if listener is not None and listener.local else BIND_PORT
        sock.remote = (self.net.remote, port)
        sock.local = (self.net.local, spec.dst_port or lport)
        sock.script_remote_isn = sock.live_remote_isn = spec.seq
        self.sockets.append(sock)
        self.sut = sock
        return sock

    def socket_by_ports(self, spec: PacketAction) -> ScriptSocket | None:
        """The connection a line with explicit ports (``< 40001>8080 S ...``) is about:
        the latest script socket with that remote (and local) port."""
        inbound = spec.direction == "<"
        remote_port = spec.src_port if inbound else spec.dst_port
        local_port = spec.dst_port if inbound else spec.src_port
        for sock in reversed(self.sockets):
            if sock.remote is None or sock.remote[1] != remote_port:
                continue
            if local_port and sock.local is not None and sock.local[1] != local_port:
                continue
            return sock
        return None

    def do_inbound(self, ev: Event, spec: PacketAction, timing: _Timing) -> None:
        if spec.src_port:
            # Several connections in one script: the ports say which one; a new SYN
            # (or any first packet from a new port) opens a child of the listener.
            found = self.socket_by_ports(spec)
            sock = found if found is not None else self.new_passive_socket(spec)
        else:
            sock = self.sut
            if sock is None or sock.state is SockState.LISTENING:
                sock = self.new_passive_socket(spec)
        if sock.state is SockState.PASSIVE_SYNACK_SENT and spec.flags & ACK:
            sock.state = SockState.PASSIVE_SYNACK_ACKED
        elif sock.state is SockState.ACTIVE_SYN_SENT and spec.flags & SYN and spec.flags & ACK:
            sock.state = SockState.ACTIVE_SYN_ACKED
            sock.script_remote_isn = sock.live_remote_isn = spec.seq
        if sock.local is None or sock.remote is None:
            raise self.fail("no connection to send this packet on: the stack's port is not known yet "
                            "(list the outbound SYN after connect())")
        syn = bool(spec.flags & SYN)
        seqno = (spec.seq + sock.remote_offset(syn)) & U32
        ackno = 0
        ack_off = sock.local_offset(syn)
        if spec.flags & ACK:
            ackno = (spec.ack + ack_off) & U32
        opts: list[Opt] = []
        for o in spec.options or []:
            if o.name == "TS" and spec.flags & ACK:
                assert isinstance(o.value, tuple)
                val, ecr = o.value
                opts.append(Opt(OPT_TS, (val, self.map_ecr(sock, ecr))))
            elif o.name == "sack":
                assert isinstance(o.value, list)
                opts.append(Opt(OPT_SACK, tuple(((a + ack_off) & U32, (b + ack_off) & U32) for a, b in o.value)))
            else:
                opts.append(_opt_from_spec(o))
        assert spec.win is not None
        seg = Segment(
            spec.src_port or sock.remote[1], spec.dst_port or sock.local[1], seqno, ackno, spec.flags,
            spec.win, spec.urg, (), bytes(spec.length),
        )
        # The options go on the wire byte for byte as written (EOL and padding
        # included), so the packet is built here rather than by the wire layer.
        packet = _with_options(build_ip_tcp(sock.remote[0], sock.local[0], seg), _encode_options(opts))
        self.wait_for(timing, "inbound packet")
        self.log(f"{self.host.now() / 1e6:9.6f} < {spec.describe()}")
        self.completed_at = self.host.now()
        self.host.inject(packet)

    def map_ecr(self, sock: ScriptSocket, ecr: int) -> int:
        if ecr in sock.ts_map:
            return sock.ts_map[ecr]
        if sock.first_ts is not None:
            return (ecr - sock.first_ts[0] + sock.first_ts[1]) & U32
        raise self.fail(f"unable to infer live TS ecr for script TS ecr {ecr}; no matching or preceding outbound TS val")

    def outbound_socket(self, spec: PacketAction) -> ScriptSocket:
        if spec.dst_port:
            found = self.socket_by_ports(spec)
            if found is None:
                raise self.fail(f"no connection with remote port {spec.dst_port} for this packet "
                                "(an inbound SYN from that port opens one)")
            if found.state is SockState.PASSIVE_PACKET_RECEIVED and spec.flags & SYN and spec.flags & ACK:
                found.script_local_isn = spec.seq
            return found
        sock = self.sut
        if spec.flags & SYN and not spec.flags & ACK and sock is not None and sock.state is SockState.ACTIVE_CONNECTING:
            sock.state = SockState.ACTIVE_SYN_SENT
            sock.script_local_isn = spec.seq
            return sock
        if sock is None:
            raise self.fail("no matching socket for script packet")
        if sock.state is SockState.PASSIVE_PACKET_RECEIVED and spec.flags & SYN and spec.flags & ACK:
            sock.script_local_isn = spec.seq
        return sock

    def belongs(self, sock: ScriptSocket, spec: PacketAction, cap: Captured) -> bool:
        seg = cap.seg
        if sock.key is not None:
            return (cap.src, seg.src_port, cap.dst, seg.dst_port) == sock.key
        if spec.src_port or spec.dst_port:
            return (not spec.src_port or seg.src_port == spec.src_port) and (
                not spec.dst_port or seg.dst_port == spec.dst_port
            )
        # A connect() whose SYN we have not seen: learn the stack's port and ISN from it.
        if (
            sock.state is SockState.ACTIVE_SYN_SENT
            and seg.flags & SYN
            and not seg.flags & ACK
            and sock.remote is not None
            and (cap.dst, seg.dst_port) == sock.remote
        ):
            sock.local = (cap.src, seg.src_port)
            sock.live_local_isn = seg.seq
            return True
        return False

    def other_connection(self, sock: ScriptSocket, cap: Captured) -> ScriptSocket | None:
        key = (cap.src, cap.seg.src_port, cap.dst, cap.seg.dst_port)
        for other in self.sockets:
            if other is not sock and other.key == key:
                return other
        return None

    def sniff_for(self, sock: ScriptSocket, spec: PacketAction, deadline: int | None) -> Captured | None:
        """The next packet of ``sock``.  A packet of another connection the script knows
        is kept for the line that names that connection (with several connections the
        order *between* them is the scheduler's, the order within each is checked);
        packets of no script connection are ignored, as packetdrill does."""
        for i, cap in enumerate(self.held):
            if sock.key is not None and self.belongs(sock, spec, cap):
                return self.held.pop(i)
        while True:
            cap = self.host.sniff(deadline)
            if cap is None:
                return None
            if self.belongs(sock, spec, cap):
                return cap
            if self.other_connection(sock, cap) is not None:
                self.held.append(cap)
                self.log(f"{cap.time / 1e6:9.6f} (held for a later line: another script connection) "
                         f"{cap.seg.describe()}")
                continue
            self.log(f"{cap.time / 1e6:9.6f} (ignored: not the socket under test) {cap.seg.describe()}")

    def do_outbound(self, ev: Event, spec: PacketAction, timing: _Timing) -> None:
        sock = self.outbound_socket(spec)
        if timing.kind is TimeKind.ANY:
            deadline = None
        else:
            deadline = max(timing.start, timing.end or 0) + SNIFF_GRACE_US
        frags: list[tuple[Captured, Segment]] = []
        total = 0
        while True:
            cap = self.sniff_for(sock, spec, deadline)
            if cap is None:
                if not frags:
                    waited = "" if deadline is None else f" (waited until {deadline / 1e6:.6f} sec)"
                    raise self.fail(
                        f"error handling packet: expected outbound packet at {_when(timing)} "
                        f"but no packet was sent{waited}\n"
                        f"script packet: {timing.start / 1e6:9.6f} {spec.describe()}\n"
                        f"actual packet: none"
                    )
                break
            if sock.state is SockState.PASSIVE_PACKET_RECEIVED and spec.flags & SYN and spec.flags & ACK:
                sock.state = SockState.PASSIVE_SYNACK_SENT
                sock.live_local_isn = cap.seg.seq
            mapped = self.to_script_space(sock, cap.seg)
            if frags:
                prev = frags[-1][1]
                err = _fragment_mismatch(prev, mapped, len(mapped.payload), total, spec.length)
                if err:
                    raise self.fail(f"error handling packet: {err}\n" + self.dump(timing, spec, frags + [(cap, mapped)]))
            frags.append((cap, mapped))
            total += len(mapped.payload)
            if total >= spec.length or not mapped.payload:
                break  # a segment without data never starts (or continues) a burst
        if total != spec.length:
            raise self.fail(
                f"error handling packet: live packet payload: expected {spec.length} bytes vs actual {total} bytes\n"
                + self.dump(timing, spec, frags)
            )
        cap, actual = frags[-1]
        self.learn_ts(sock, spec, cap.seg)
        actual = self.ts_to_script(sock, actual)
        if len(frags) > 1:
            first = frags[0][1]
            payload = b"".join(bytes(m.payload) for _, m in frags)
            actual = Segment(actual.src_port, actual.dst_port, first.seq, actual.ack,
                             actual.flags | (first.flags & CWR), actual.window, actual.urg, actual.options, payload)
        self.log(f"{cap.time / 1e6:9.6f} > {_describe(actual)}")
        err = self.compare(sock, spec, actual, cap.seg, timing, cap.time)
        if err:
            raise self.fail(f"error handling packet: {err}\n" + self.dump(timing, spec, [(cap, actual)]))
        self.completed_at = max(cap.time, self.completed_at or 0)

    def learn_ts(self, sock: ScriptSocket, spec: PacketAction, live: Segment) -> None:
        """Remember which live TS val the script calls by its number (for inbound ecr)."""
        live_ts = live.ts
        spec_ts = next((o.value for o in spec.options or [] if o.name == "TS"), None)
        if live_ts is not None and isinstance(spec_ts, tuple):
            sock.ts_map[spec_ts[0]] = live_ts[0]
            if sock.first_ts is None:
                sock.first_ts = (spec_ts[0], live_ts[0])

    def ts_to_script(self, sock: ScriptSocket, seg: Segment) -> Segment:
        """The TS val in script space (the first outbound TS val the script named is the anchor)."""
        if sock.first_ts is None or seg.ts is None:
            return seg
        s0, l0 = sock.first_ts
        opts = tuple(
            Opt(OPT_TS, ((s0 + o.value[0] - l0) & U32, o.value[1])) if o.kind == OPT_TS else o  # type: ignore[index]
            for o in seg.options
        )
        return Segment(seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, seg.urg, opts, seg.payload)

    def to_script_space(self, sock: ScriptSocket, seg: Segment) -> Segment:
        syn = bool(seg.flags & SYN)
        seqno = (seg.seq - sock.local_offset(syn)) & U32
        remote_off = sock.remote_offset(syn)
        ackno = (seg.ack - remote_off) & U32 if seg.flags & ACK else seg.ack
        opts = []
        for o in seg.options:
            if o.kind == OPT_SACK:
                blocks: Any = o.value
                opts.append(Opt(OPT_SACK, tuple(((a - remote_off) & U32, (b - remote_off) & U32) for a, b in blocks)))
            else:
                opts.append(o)
        return Segment(seg.src_port, seg.dst_port, seqno, ackno, seg.flags, seg.window, seg.urg, tuple(opts), seg.payload)

    def compare(self, sock: ScriptSocket, spec: PacketAction, actual: Segment, live: Segment,
                timing: _Timing, when: int) -> str | None:
        for name, bit in (("tcp_fin", FIN), ("tcp_syn", SYN), ("tcp_rst", RST), ("tcp_psh", PSH),
                          ("tcp_ack", ACK), ("tcp_urg", URG), ("tcp_ece", ECE), ("tcp_cwr", CWR), ("tcp_ae", AE)):
            e, a = int(bool(spec.flags & bit)), int(bool(actual.flags & bit))
            if e != a:
                return _field(name, e, a)
        if actual.seq != spec.seq:
            return _field("tcp_seq", spec.seq, actual.seq)
        if actual.ack != spec.ack:
            return _field("tcp_ack_seq", spec.ack, actual.ack)
        if spec.win is not None and actual.window != spec.win:
            return _field("tcp_window", spec.win, actual.window)
        if actual.urg != spec.urg:
            return _field("tcp_urg_ptr", spec.urg, actual.urg)
        if spec.options is not None:
            err = self.compare_options(sock, spec, actual, timing)
            if err:
                return err
        if any(actual.payload):
            return "incorrect outbound data payload (expected the zero bytes write() sent)"
        try:
            self.verify_time(timing.kind, timing.start, timing.end, when, self.last_time, "outbound packet",
                             timing.offset)
        except ScriptFailure as exc:
            return str(exc)
        return None

    def compare_options(self, sock: ScriptSocket, spec: PacketAction, actual: Segment, timing: _Timing) -> str | None:
        expected = spec.options or []
        got = list(actual.options)
        for i in range(max(len(expected), len(got))):
            if i >= len(expected) or i >= len(got) or _KIND[expected[i].name] != got[i].kind and not (
                expected[i].name == "raw" and isinstance(expected[i].value, tuple) and expected[i].value[0] == got[i].kind  # type: ignore[index]
            ):
                return (f"bad outbound TCP options: expected <{','.join(o.describe() for o in expected)}> "
                        f"actual <{_describe_opts(actual.options)}>")
            e, a = expected[i], got[i]
            if e.name in ("nop", "eol", "sackOK"):
                continue
            if e.name == "TS":
                if self.ts_tick_us:
                    assert isinstance(e.value, tuple) and isinstance(a.value, tuple)
                    script_val = a.value[0]  # already in script space
                    delta = abs(((script_val - e.value[0] + 0x80000000) & U32) - 0x80000000)
                    tol = self.tolerance(timing.start, 0)
                    if delta * self.ts_tick_us > tol:
                        return f"bad outbound TCP timestamp value {script_val} (expected {e.value[0]}), tolerance {tol}"
                continue
            want = _opt_from_spec(e)
            if want.value != a.value:
                return (f"bad value in outbound TCP option (kind={want.kind}): expected: {e.describe()} "
                        f"actual: {_describe_opts((a,))}")
        return None

    def dump(self, timing: _Timing, spec: PacketAction, frags: list[tuple[Captured, Segment]]) -> str:
        lines = [f"script packet: {timing.start / 1e6:9.6f} {spec.describe()}"]
        if len(frags) == 1:
            lines.append(f"actual packet: {frags[0][0].time / 1e6:9.6f} {_describe(frags[0][1])}")
        else:
            for i, (cap, m) in enumerate(frags):
                lines.append(f"actual #{i} packet: {cap.time / 1e6:9.6f} {_describe(m)}")
        return "\n".join(lines)

    # -- system calls ------------------------------------------------------------------
    def check_pending(self) -> None:
        if self.pending is None:
            return
        ev, sc, timing, h, post = self.pending
        if not h.done:
            return
        self.pending = None
        line, self.event_line = self.event_line, ev.line
        self.finish_call(sc, h, post)
        assert sc.end_usecs is not None and h.end is not None
        end = sc.end_usecs + (timing.offset if timing.kind is TimeKind.RELATIVE else 0)
        self.verify_time(timing.kind, end, None, h.end, timing.start, "system call return")
        self.event_line = line

    def await_idle(self) -> bool:
        """Wait (at most 1 s, as packetdrill) for a blocking call in progress to return."""
        if self.pending is None:
            return True
        h = self.pending[3]
        self.host.wait_call(h, self.host.now() + MAX_WAIT_IDLE_US)
        self.check_pending()
        return self.pending is None

    def finish_pending(self) -> None:
        if self.pending is None:
            return
        ev, sc, timing, h, _ = self.pending
        assert sc.end_usecs is not None
        end = sc.end_usecs + (timing.offset if timing.kind is TimeKind.RELATIVE else 0)
        self.host.wait_call(h, max(end, self.host.now()) + self.tolerance(end, timing.start) + MAX_WAIT_IDLE_US)
        self.check_pending()
        if self.pending is not None:
            self.event_line = ev.line
            raise self.fail(f"blocking {sc.name}() call did not return (expected at {end / 1e6:.6f} sec)")

    def do_syscall(self, ev: Event, sc: SyscallAction, timing: _Timing) -> None:
        if sc.blocking:
            if not self.await_idle():
                raise self.fail("blocking system call while another blocking system call is already in progress")
        else:
            self.await_idle()
        self.wait_for(timing, "system call start")
        name, args, post = self.prepare_call(sc)
        self.log(f"{self.host.now() / 1e6:9.6f} {sc.name}({', '.join(_expr_text(a) for a in sc.args)})"
                 + (" ..." if sc.blocking else ""))
        started = self.host.now()
        h = self.host.start_call(name, args)
        if sc.blocking:
            self.completed_at = started  # the call goes on in the background
            self.pending = (ev, sc, timing, h, post)
            self.check_pending()
            return
        if not self.host.wait_call(h, None):
            raise self.fail(f"{sc.name}() blocked and did not return; mark a blocking call with "
                            f"...END_TIME (e.g. +0...0.1 {sc.name}(...))")
        self.completed_at = h.end if h.end is not None else self.host.now()
        self.finish_call(sc, h, post)

    def finish_call(self, sc: SyscallAction, h: CallHandle, post: Callable[[Any], int]) -> None:
        if h.exc is not None:
            raise h.exc
        expected = self.int_value(sc.result)
        if h.error is not None:
            actual, actual_errno = -1, h.error.errno or 0
        else:
            try:
                actual = post(h.value)
            except OSError as exc:
                actual, actual_errno = -1, exc.errno or 0
            else:
                actual_errno = 0
        self.log(f"{(h.end or 0) / 1e6:9.6f}   {sc.name} returned {actual}"
                 + (f" {symbols.errno_name(actual_errno)}" if actual < 0 and actual_errno else ""))
        check_fd = sc.name in ("socket", "accept")
        if check_fd and expected >= 0:
            if actual < 0:
                raise self.fail(f"runtime error in {sc.name} call: Expected non-negative result but got {actual} "
                                f"with errno {actual_errno} ({_strerror(actual_errno)})")
        elif actual != expected:
            raise self.fail(f"runtime error in {sc.name} call: Expected result {expected} but got {actual} "
                            f"with errno {actual_errno} ({_strerror(actual_errno)})")
        if sc.errno is not None:
            want = symbols.errno_value(sc.errno)
            if want is None:
                raise ScriptUsageError(f"unknown errno name {sc.errno}")
            if actual_errno != want:
                raise self.fail(f"runtime error in {sc.name} call: Expected errno {want} ({_strerror(want)}) "
                                f"but got {actual_errno} ({_strerror(actual_errno)})")
        if h.error is None and check_fd and expected >= 0:
            self.bind_fd(sc, expected, h.value)

    # argument helpers
    def int_value(self, e: Expr) -> int:
        if isinstance(e, IntExpr):
            return e.value
        if isinstance(e, WordExpr):
            if e.name in symbols.SYMBOLS:
                return symbols.SYMBOLS[e.name]
            errno_value = symbols.errno_value(e.name) if e.name.startswith("E") else None
            if errno_value is not None:
                return errno_value
            raise ScriptUsageError(f"unknown symbol {e.name}")
        if isinstance(e, BinaryExpr) and e.op == "|":
            return self.int_value(e.lhs) | self.int_value(e.rhs)
        if isinstance(e, ListExpr) and len(e.items) == 1:
            return self.int_value(e.items[0])
        if isinstance(e, CallExpr) and e.name == "htons" and len(e.args) == 1:
            return self.int_value(e.args[0])
        raise ScriptUsageError(f"expected an integer, got {_expr_text(e)}")

    def arg(self, sc: SyscallAction, i: int) -> Expr:
        if i >= len(sc.args):
            raise ScriptUsageError(f"{sc.name}() needs at least {i + 1} arguments")
        return sc.args[i]

    def nargs(self, sc: SyscallAction, *counts: int) -> None:
        if len(sc.args) not in counts:
            raise ScriptUsageError(f"{sc.name}() takes {' or '.join(map(str, counts))} arguments, got {len(sc.args)}")

    def live_fd(self, sc: SyscallAction, i: int = 0) -> int:
        script_fd = self.int_value(self.arg(sc, i))
        target = self.fds.get(script_fd)
        if target is None:
            raise ScriptUsageError(f"bad file descriptor {script_fd} in script (no socket() or accept() returned it)")
        if isinstance(target, ScriptSocket):
            assert target.live_fd is not None
            return target.live_fd
        return target

    def bind_fd(self, sc: SyscallAction, script_fd: int, value: Any) -> None:
        if script_fd in self.fds:
            raise ScriptUsageError(f"duplicate fd {script_fd} in script")
        if sc.name == "socket":
            sock = ScriptSocket(SockState.NEW)
            sock.live_fd, sock.script_fd = int(value), script_fd
            self.sockets.append(sock)
            self.sut = sock
            self.fds[script_fd] = sock
            return
        live_fd, peer = value
        raddr, rport = Addressing.wire(peer[0]), peer[1]
        for sock in self.sockets:
            if sock.remote == (raddr, rport) and sock.state in (
                SockState.PASSIVE_SYNACK_SENT, SockState.PASSIVE_SYNACK_ACKED, SockState.PASSIVE_PACKET_RECEIVED
            ):
                sock.live_fd, sock.script_fd = live_fd, script_fd
                self.fds[script_fd] = sock
                return
        raise self.fail("unable to find socket matching accept() call")

    def fd_socket(self, sc: SyscallAction) -> ScriptSocket | None:
        target = self.fds.get(self.int_value(self.arg(sc, 0)))
        return target if isinstance(target, ScriptSocket) else None

    def prepare_call(self, sc: SyscallAction) -> tuple[str, tuple[Any, ...], Callable[[Any], int]]:
        """Check a call's arguments; returns (host call, live arguments, result -> int)."""
        name = sc.name
        ident: Callable[[Any], int] = lambda v: int(v)  # noqa: E731
        if name == "socket":
            self.nargs(sc, 3)
            dom = sc.args[0]
            domain = self.net.domain if isinstance(dom, EllipsisExpr) else self.int_value(dom)
            return "socket", (domain, self.int_value(sc.args[1]), self.int_value(sc.args[2])), ident
        if name == "bind":
            self.nargs(sc, 3)
            self._require_default_addr(sc)
            sock = self.fd_socket(sc)
            fd = self.live_fd(sc)

            def bound(v: Any) -> int:
                if sock is not None:
                    sock.local = (self.net.local, BIND_PORT)
                return int(v)
            return "bind", (fd, self.net.local, BIND_PORT), bound
        if name == "listen":
            self.nargs(sc, 2)
            sock = self.fd_socket(sc)
            fd = self.live_fd(sc)

            def listening(v: Any) -> int:
                if sock is not None:
                    sock.state = SockState.LISTENING
                    self.listener = sock
                    if sock.local is None:
                        sock.local = (self.net.local, BIND_PORT)
                return int(v)
            return "listen", (fd, self.int_value(sc.args[1])), listening
        if name in ("accept", "accept4"):
            self.nargs(sc, 3, 4)
            return "accept", (self.live_fd(sc),), lambda v: int(v[0])
        if name == "connect":
            self.nargs(sc, 3)
            self._require_default_addr(sc)
            sock = self.fd_socket(sc)
            fd = self.live_fd(sc)
            if sock is not None and sock.state is SockState.NEW:
                sock.state = SockState.ACTIVE_CONNECTING
                sock.remote = (self.net.remote, BIND_PORT)
                self.sut = sock
            return "connect", (fd, self.net.remote, BIND_PORT), ident
        if name in ("write", "read"):
            self.nargs(sc, 3)
            return name, (self.live_fd(sc), self.int_value(sc.args[2])), ident
        if name in ("send", "recv"):
            self.nargs(sc, 4)
            return name, (self.live_fd(sc), self.int_value(sc.args[2]), self.int_value(sc.args[3])), ident
        if name == "writev":
            self.nargs(sc, 3)
            iov = sc.args[1]
            if not isinstance(iov, ListExpr):
                raise ScriptUsageError("writev() takes an array of {..., len} iovecs")
            total = 0
            for it in iov.items:
                if not isinstance(it, BracedExpr) or len(it.items) != 2:
                    raise ScriptUsageError("writev() iovecs are written {..., LEN}")
                total += self.int_value(it.items[1])
            return "write", (self.live_fd(sc), total), ident
        if name == "close":
            self.nargs(sc, 1)
            script_fd = self.int_value(sc.args[0])
            fd = self.live_fd(sc)

            def closed(v: Any) -> int:
                target = self.fds.pop(script_fd, None)
                if isinstance(target, ScriptSocket):
                    target.script_fd = None
                return int(v)
            return "close", (fd,), closed
        if name == "shutdown":
            self.nargs(sc, 2)
            return "shutdown", (self.live_fd(sc), self.int_value(sc.args[1])), ident
        if name == "fcntl":
            self.nargs(sc, 2, 3)
            arg = self.int_value(sc.args[2]) if len(sc.args) == 3 else 0
            return "fcntl", (self.live_fd(sc), self.int_value(sc.args[1]), arg), ident
        if name == "setsockopt":
            self.nargs(sc, 5)
            return "setsockopt", (self.live_fd(sc), self.int_value(sc.args[1]), self.int_value(sc.args[2]),
                                  self.optval(sc.args[3])), ident
        if name == "getsockopt":
            self.nargs(sc, 5)
            level, opt = self.int_value(sc.args[1]), self.int_value(sc.args[2])
            want = sc.args[3]
            optlen = self.int_value(sc.args[4])

            def compare(v: Any) -> int:
                if isinstance(want, EllipsisExpr):
                    return 0
                expected = self.optval(want)
                actual = v
                if isinstance(expected, tuple) and isinstance(actual, tuple):
                    if expected != actual:
                        raise self.fail(f"Bad getsockopt optval: expected: {expected} actual: {actual}")
                    return 0
                if optlen != 4:
                    raise ScriptUsageError(f"Unsupported getsockopt optlen: {optlen}")
                if actual != expected:
                    raise self.fail(f"Bad getsockopt optval: expected: {expected} actual: {actual}")
                return 0
            return "getsockopt", (self.live_fd(sc), level, opt), compare
        if name == "poll":
            self.nargs(sc, 3)
            fds_expr = sc.args[0]
            if not isinstance(fds_expr, ListExpr):
                raise ScriptUsageError("poll() takes an array of {fd=..., events=..., revents=...}")
            entries = []
            for it in fds_expr.items:
                if not isinstance(it, BracedExpr) or it.field("fd") is None or it.field("events") is None:
                    raise ScriptUsageError("poll() entries are written {fd=N, events=E[, revents=R]}")
                fd_e, ev_e, rev_e = it.field("fd"), it.field("events"), it.field("revents")
                assert fd_e is not None and ev_e is not None
                script_fd = self.int_value(fd_e)
                target = self.fds.get(script_fd)
                if target is None:
                    raise ScriptUsageError(f"bad file descriptor {script_fd} in poll()")
                live = target.live_fd if isinstance(target, ScriptSocket) else target
                entries.append((live, self.int_value(ev_e), 0 if rev_e is None else self.int_value(rev_e)))
            if self.int_value(sc.args[1]) != len(entries):
                raise ScriptUsageError(f"nfds {self.int_value(sc.args[1])} does not match {len(entries)}-element pollfd array")
            timeout = self.int_value(sc.args[2])

            def revents(v: Any) -> int:
                n, got = v
                for (fd, _, want), have in zip(entries, got, strict=True):
                    if want != have:
                        raise self.fail(f"poll() revents for fd (live {fd}): expected: {_poll_text(want)} "
                                        f"actual: {_poll_text(have)}")
                return int(n)
            return "poll", (tuple((fd, ev) for fd, ev, _ in entries), timeout), revents
        raise ScriptUsageError(f"system call {name}() is not supported by tcpstack script")

    def optval(self, e: Expr) -> Any:
        if isinstance(e, BracedExpr):
            onoff, lin = e.field("onoff"), e.field("linger")
            if onoff is not None and lin is not None:
                return (self.int_value(onoff), self.int_value(lin))
            raise ScriptUsageError("struct option values other than {onoff=N, linger=N} are not supported")
        if isinstance(e, StringExpr):
            return e.value
        return self.int_value(e)

    def _require_default_addr(self, sc: SyscallAction) -> None:
        for a in sc.args[1:]:
            if not isinstance(a, EllipsisExpr):
                raise ScriptUsageError(f"{sc.name}(): only ... addresses are supported (the runner picks "
                                       f"{self.net.local} port {BIND_PORT} and {self.net.remote} port {BIND_PORT})")


class ScriptUsageError(Exception):
    """The script asks for something this interpreter does not support."""


# ----------------------------------------------------------------------------- helpers

_KIND = {"eol": 0, "nop": 1, "mss": 2, "wscale": 3, "sackOK": 4, "sack": 5, "TS": 8, "raw": -1}
_SAFE_BUILTINS = {n: getattr(builtins, n)
                  for n in ("abs", "min", "max", "len", "int", "float", "round", "range", "print", "bool",
                            "AssertionError", "True", "False", "None", "sum", "all", "any")}


def _opt_from_spec(o: OptSpec) -> Opt:
    n, v = o.name, o.value
    if n == "nop":
        return Opt(1, None)
    if n == "eol":
        return Opt(0, None)
    if n == "mss":
        return Opt(2, v)
    if n == "wscale":
        return Opt(3, v)
    if n == "sackOK":
        return Opt(4, None)
    if n == "sack":
        assert isinstance(v, list)
        return Opt(OPT_SACK, tuple((a, b) for a, b in v))
    if n == "TS":
        return Opt(OPT_TS, v)
    assert isinstance(v, tuple)
    return Opt(v[0], v[1])


def _encode_options(options: list[Opt]) -> bytes:
    out = bytearray()
    for kind, value in options:
        v: Any = value
        if kind in (0, 1):
            out.append(kind)
        elif kind == 2:
            out += bytes((2, 4)) + int(v).to_bytes(2, "big")
        elif kind == 3:
            out += bytes((3, 3, int(v)))
        elif kind == 4:
            out += bytes((4, 2))
        elif kind == OPT_SACK:
            out += bytes((5, 2 + 8 * len(v))) + b"".join(a.to_bytes(4, "big") + b.to_bytes(4, "big") for a, b in v)
        elif kind == OPT_TS:
            out += bytes((8, 10)) + v[0].to_bytes(4, "big") + v[1].to_bytes(4, "big")
        else:
            out += bytes((kind, 2 + len(v))) + bytes(v)
    return bytes(out)


def _with_options(packet: bytes, options: bytes) -> bytes:
    """Insert raw option bytes into an IPv4 or IPv6 packet built without TCP options
    (lengths and checksums redone; RFC 8200 8.1 for the IPv6 pseudo-header)."""
    if not options:
        return packet
    v6 = packet[0] >> 4 == 6
    ihl = 40 if v6 else (packet[0] & 0xF) * 4
    ip = bytearray(packet[:ihl])
    tcp = bytearray(packet[ihl : ihl + 20]) + options + packet[ihl + 20 :]
    tcp[12] = ((20 + len(options)) // 4) << 4 | (tcp[12] & 0x0F)
    tcp[16:18] = b"\0\0"
    if v6:
        ip[4:6] = len(tcp).to_bytes(2, "big")
        pseudo = pseudo_header_sum(bytes(ip[8:24]), bytes(ip[24:40]), 6, len(tcp))
    else:
        ip[2:4] = (ihl + len(tcp)).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = internet_checksum(ip).to_bytes(2, "big")
        pseudo = pseudo_header_sum(bytes(ip[12:16]), bytes(ip[16:20]), 6, len(tcp))
    tcp[16:18] = internet_checksum(tcp, pseudo).to_bytes(2, "big")
    return bytes(ip + tcp)


def _describe_opts(options: tuple[Opt, ...]) -> str:
    parts = []
    for kind, value in options:
        v: Any = value
        if kind == 0:
            parts.append("eol")
        elif kind == 1:
            parts.append("nop")
        elif kind == 2:
            parts.append(f"mss {v}")
        elif kind == 3:
            parts.append(f"wscale {v}")
        elif kind == 4:
            parts.append("sackOK")
        elif kind == 5:
            parts.append("sack " + " ".join(f"{a}:{b}" for a, b in v))
        elif kind == 8:
            parts.append(f"TS val {v[0]} ecr {v[1]}")
        else:
            parts.append(f"kind {kind} 0x{bytes(v or b'').hex()}")
    return ",".join(parts)


_FLAG_ORDER = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "W"), (AE, "A"), (ACK, "."))


def _describe(seg: Segment) -> str:
    """A segment in script notation: ``P. 1:1001(1000) ack 1 win 257 <nop,nop,TS val 5 ecr 7>``."""
    flags = "".join(ch for bit, ch in _FLAG_ORDER if seg.flags & bit) or "-"
    n = len(seg.payload)
    parts = [flags, f"{seg.seq}:{(seg.seq + n) & U32}({n})"]
    if seg.flags & ACK:
        parts.append(f"ack {seg.ack}")
    parts.append(f"win {seg.window}")
    if seg.urg:
        parts.append(f"urg {seg.urg}")
    if seg.options:
        parts.append(f"<{_describe_opts(seg.options)}>")
    return " ".join(parts)


def _field(name: str, expected: int, actual: int) -> str:
    return f"live packet field {name}: expected: {expected} ({expected:#x}) vs actual: {actual} ({actual:#x})"


def _fragment_mismatch(prev: Segment, cur: Segment, cur_len: int, sniffed: int, expected_total: int) -> str | None:
    """Can ``cur`` continue the burst that ``prev`` started (packetdrill's verify_packet_fragments)?"""
    mask = SYN | RST | ACK | URG | ECE | AE
    if prev.flags & mask != cur.flags & mask:
        return "burst fragment flags differ"
    if (prev.seq + len(prev.payload)) & U32 != cur.seq:
        return _field("tcp_seq", (prev.seq + len(prev.payload)) & U32, cur.seq)
    if prev.ack != cur.ack:
        return _field("tcp_ack_seq", prev.ack, cur.ack)
    if prev.window != cur.window:
        return _field("tcp_window", prev.window, cur.window)
    if cur_len < expected_total - sniffed and cur_len != len(prev.payload):
        return (f"fragment payload: expected {len(prev.payload)} bytes vs actual {cur_len} bytes; "
                f"total payload: expected {expected_total} bytes vs actual {cur_len + sniffed} bytes")
    return None


def _when(timing: _Timing) -> str:
    if timing.kind is TimeKind.ANY:
        return "any time"
    if timing.end is not None:
        return f"{timing.start / 1e6:.6f}~{timing.end / 1e6:.6f} sec"
    return f"{timing.start / 1e6:.6f} sec"


def _strerror(n: int) -> str:
    import os

    return os.strerror(n) if n else "Success"


def _poll_text(mask: int) -> str:
    names = [n for n, v in symbols.SYMBOLS.items() if n.startswith("POLL") and v & mask and v == v & mask]
    return "|".join(names) or "0"


def _expr_text(e: Expr) -> str:
    if isinstance(e, WordExpr):
        return e.name
    if isinstance(e, IntExpr):
        return str(e.value)
    if isinstance(e, StringExpr):
        return repr(e.value)
    if isinstance(e, EllipsisExpr):
        return "..."
    if isinstance(e, BinaryExpr):
        return f"{_expr_text(e.lhs)}{e.op}{_expr_text(e.rhs)}"
    if isinstance(e, ListExpr):
        return "[" + ", ".join(_expr_text(i) for i in e.items) + "]"
    if isinstance(e, BracedExpr):
        return "{" + ", ".join(_expr_text(i) for i in e.items) + "}"
    if isinstance(e, CallExpr):
        return f"{e.name}(" + ", ".join(_expr_text(i) for i in e.args) + ")"
    return type(e).__name__


def _split_commands(text: str) -> list[str]:
    out = []
    for line in text.replace("&&", "\n").replace(";", "\n").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out
