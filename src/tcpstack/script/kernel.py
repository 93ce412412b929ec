"""The script target "linux": the kernel's TCP, through a TUN device in a namespace.

For each script the host creates a namespace ``tcpstack-s<pid>-<n>`` with a
TUN device in it; the kernel owns 198.18.0.2/24 on the device, so the
script's peer, 198.18.0.1, is reached through the TUN, exactly as with
tcpstack.  Inbound packets are written to the TUN fd; a capture thread
reads what the kernel sends and stamps it with the time it arrived.

System calls run on one worker thread that was *started inside the
namespace* (setns(2) affects only the calling thread, and a thread inherits
its creator's namespace), so socket() creates sockets there; the main
thread never enters the namespace after setup.  A call marked blocking
(``...END``) runs while the script goes on, as packetdrill's syscall thread
does; the runner knows it is blocked when the worker sleeps in the kernel
(/proc/self/task/TID/stat says "S").  Time is real, so the tolerances of
the script matter here.  Everything is removed at the end: sockets, device,
namespace.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import queue
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

from ..runtime.netns import NetnsLease, in_netns
from ..runtime.tun import TunDevice
from ..tcp.config import Config
from ..wire.errors import MalformedPacket
from ..wire.ip import parse_ip_tcp
from .addressing import Addressing, addressing
from .run import LOCAL_ADDR, CallHandle, Captured, ScriptUsageError
from .symbols import SYMBOLS

SOL_SOCKET, IPPROTO_TCP = 1, 6
SO_LINGER, TCP_INFO, TCP_CONGESTION = 13, 11, 13
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS (asm-generic/socket.h)
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # linux/if_packet.h
WAIT_CAP_S = 10.0  # an unmarked blocking call, or `*`, gives up after this long
BLOCK_DETECT_S = 0.2  # how long start_call waits to see the worker finish or sleep
_counter = itertools.count()
_SYSCTL_RE = re.compile(r"net\.(ipv4|ipv6|core)\.[a-z0-9_.]+")

# struct tcp_info (include/uapi/linux/tcp.h) after the eight u8 fields.
_TCPI_FIELDS: list[tuple[str, str]] = [
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"), ("unacked", "I"), ("sacked", "I"),
    ("lost", "I"), ("retrans", "I"), ("fackets", "I"), ("last_data_sent", "I"), ("last_ack_sent", "I"),
    ("last_data_recv", "I"), ("last_ack_recv", "I"), ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"),
    ("rttvar", "I"), ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"), ("pacing_rate", "Q"),
    ("max_pacing_rate", "Q"), ("bytes_acked", "Q"), ("bytes_received", "Q"), ("segs_out", "I"),
    ("segs_in", "I"), ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"),
    ("data_segs_out", "I"), ("delivery_rate", "Q"), ("busy_time", "Q"), ("rwnd_limited", "Q"),
    ("sndbuf_limited", "Q"), ("delivered", "I"), ("delivered_ce", "I"), ("bytes_sent", "Q"),
    ("bytes_retrans", "Q"), ("dsack_dups", "I"), ("reord_seen", "I"), ("rcv_ooopack", "I"),
    ("snd_wnd", "I"), ("rcv_wnd", "I"), ("rehash", "I"), ("total_rto", "H"),
    ("total_rto_recoveries", "H"), ("total_rto_time", "I"),
]


def parse_tcp_info(buf: bytes) -> dict[str, int]:
    """Linux's struct tcp_info as ``tcpi_*`` names (only the fields the kernel returned)."""
    out: dict[str, int] = {}
    if len(buf) < 8:
        return out
    for i, name in enumerate(("state", "ca_state", "retransmits", "probes", "backoff", "options")):
        out[f"tcpi_{name}"] = buf[i]
    out["tcpi_snd_wscale"] = buf[6] & 0xF
    out["tcpi_rcv_wscale"] = buf[6] >> 4
    off = 8
    for name, fmt in _TCPI_FIELDS:
        size = struct.calcsize(fmt)
        off = (off + size - 1) // size * size
        if off + size > len(buf):
            break
        (out[f"tcpi_{name}"],) = struct.unpack_from("=" + fmt, buf, off)
        off += size
    return out


class KernelHost:
    target = "linux"

    def __init__(self, netns: str | None = None) -> None:
        self.netns_name = netns or f"tcpstack-s{os.getpid()}-{next(_counter)}"
        self.lease: NetnsLease | None = None
        self.tun: TunDevice | None = None
        self.t0 = time.monotonic_ns() // 1000
        self.queue: deque[Captured] = deque()
        self.cond = threading.Condition()
        self.calls: queue.Queue[Any] = queue.Queue()
        self.socks: dict[int, socket.socket] = {}
        self.worker: threading.Thread | None = None
        self.worker_tid = 0
        self.in_call = False
        self.capture: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._ready = False
        self.cc_override: str | None = None
        self.tap: socket.socket | None = None
        self.realtime_minus_mono = 0
        self.net = addressing()

    def configure(self, net: Addressing) -> None:
        """The IP version and addresses: the kernel gets the script's local address on the
        TUN (with IPv6, fd00:198:18::2/64 besides the IPv4 one)."""
        if self._ready:
            raise RuntimeError("KernelHost.configure() must come before the namespace is set up")
        self.net = net

    # -- setup and teardown -----------------------------------------------------------
    def _ensure(self) -> None:
        if self._ready:
            return
        self._ready = True
        self.lease = NetnsLease(self.netns_name)
        self.lease.acquire()
        if not self.lease.created:
            raise ScriptUsageError(f"namespace {self.netns_name} already exists; refusing to reuse it")
        net = self.net
        addr6 = f"{net.local}/{net.prefixlen}" if net.wire_v6 else None
        self.tun = TunDevice("tcps%d", netns=self.netns_name, addr4=f"{LOCAL_ADDR}/24", addr6=addr6, offload=False)
        started = threading.Event()
        with in_netns(self.netns_name):
            # Started here, the worker lives in the namespace for good (clone copies it).
            self.worker = threading.Thread(target=self._work, args=(started,), name="script-syscalls", daemon=True)
            self.worker.start()
        started.wait(5)
        # Pin the namespace to tcpstack's defaults, as packetdrill's defaults.sh pins the
        # kernel's, so a script reads the same whatever the host kernel's own defaults are
        # (Linux 6.x raised tcp_rmem[2] to 32 MB, hence wscale 10; hosts may choose BBR).
        cfg = Config()
        for key, value in (
            ("net.ipv4.tcp_rmem", " ".join(map(str, cfg.tcp_rmem))),
            ("net.ipv4.tcp_wmem", " ".join(map(str, cfg.tcp_wmem))),
            ("net.ipv4.tcp_congestion_control", cfg.tcp_congestion_control),
        ):
            self.sysctl(key, value)
        self._open_tap()
        self._stop_r, self._stop_w = os.pipe()
        self.capture = threading.Thread(target=self._capture, name="script-capture", daemon=True)
        self.capture.start()

    def start(self) -> None:
        self._ensure()
        self.t0 = time.monotonic_ns() // 1000
        with self.cond:
            self.queue.clear()

    def close(self) -> None:
        for s in list(self.socks.values()):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a call blocked in it
            except OSError:
                pass
        for s in list(self.socks.values()):
            try:
                s.close()
            except OSError:
                pass
        self.socks.clear()
        if self.worker is not None:
            self.calls.put(None)
            self.worker.join(5)
        if self.capture is not None:
            os.write(self._stop_w, b"x")
            self.capture.join(5)
        if self.tap is not None:
            self.tap.close()
            self.tap = None
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        try:
            if self.tun is not None:
                self.tun.close()
        finally:
            if self.lease is not None:
                self.lease.close()

    # -- threads -------------------------------------------------------------------------
    def _work(self, started: threading.Event) -> None:
        self.worker_tid = threading.get_native_id()
        started.set()
        while True:
            item = self.calls.get()
            if item is None:
                return
            fn, args, h = item
            self.in_call = True
            value: Any = None
            error: OSError | None = None
            try:
                value = fn(*args)
            except OSError as exc:
                error = exc
            except Exception as exc:  # a usage error: hand it to the runner
                error = OSError(0, str(exc))
                h.exc = exc
            self.in_call = False
            with self.cond:
                h.finish(value, error, self.now())
                self.cond.notify_all()

    def _open_tap(self) -> None:
        """An AF_PACKET socket on the TUN device, in the namespace: it sees each packet
        the kernel sends with the kernel's own timestamp of the moment it left
        (SO_TIMESTAMPNS), so a busy machine delays our reading, not the times we check."""
        assert self.tun is not None
        try:
            with in_netns(self.netns_name):
                # ETH_P_ALL: outgoing packets reach only the "all protocols" taps.
                tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            tap.bind((self.tun.name, ETH_P_ALL))
            tap.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            tap.setblocking(False)
        except OSError:
            self.tap = None  # fall back to stamping packets when the TUN fd is read
            return
        self.tap = tap
        # Kernel timestamps are CLOCK_REALTIME; our script clock is CLOCK_MONOTONIC.
        self.realtime_minus_mono = time.time_ns() // 1000 - time.monotonic_ns() // 1000

    def _capture(self) -> None:
        assert self.tun is not None
        tun_fd = self.tun.fileno()
        tap = self.tap
        fds = [tun_fd, self._stop_r] + ([tap.fileno()] if tap is not None else [])
        while True:
            r, _, _ = select.select(fds, [], [], 1.0)
            if self._stop_r in r:
                return
            got: list[Captured] = []
            if tun_fd in r:
                frames = self.tun.read_batch(64)  # always drained; the tap has the times
                if tap is None:
                    t = self.now()
                    got.extend(c for c in (self._captured(t, f, self.net.remote) for f in frames) if c is not None)
            if tap is not None and tap.fileno() in r:
                got.extend(self._read_tap(tap))
            if got:
                with self.cond:
                    self.queue.extend(got)
                    self.cond.notify_all()

    def _read_tap(self, tap: socket.socket) -> list[Captured]:
        got = []
        for _ in range(256):
            try:
                data, anc, _flags, addr = tap.recvmsg(65536, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            if addr[2] != PACKET_OUTGOING:
                continue  # what we injected
            t = self.now()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t = sec * 1_000_000 + nsec // 1000 - self.realtime_minus_mono - self.t0
            c = self._captured(t, data, self.net.remote)
            if c is not None:
                got.append(c)
        return got

    @staticmethod
    def _captured(t: int, frame: bytes, remote: str) -> Captured | None:
        try:
            src, dst, seg = parse_ip_tcp(frame)
        except MalformedPacket:
            return None  # not TCP (with IPv6 the kernel may send MLD reports: ICMPv6)
        return Captured(t, src, dst, seg) if dst == remote else None

    def _worker_sleeping(self) -> bool:
        try:
            with open(f"/proc/self/task/{self.worker_tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"S", b"D")

    # -- the host interface --------------------------------------------------------------
    def now(self) -> int:
        return time.monotonic_ns() // 1000 - self.t0

    def wait_until(self, t: int) -> None:
        while True:
            left = t - self.now()
            if left <= 0:
                return
            # Sleep until shortly before, then yield in a loop: the scheduler's wake-up
            # latency (ms under load) would otherwise make inbound packets late.
            time.sleep(left / 1e6 - 0.0015 if left > 2000 else 0)

    def sniff(self, deadline: int | None) -> Captured | None:
        limit = deadline if deadline is not None else self.now() + int(WAIT_CAP_S * 1e6)
        with self.cond:
            while not self.queue:
                left = limit - self.now()
                if left <= 0:
                    return None
                self.cond.wait(left / 1e6)
            return self.queue.popleft()

    def inject(self, packet: bytes) -> None:
        assert self.tun is not None
        self.tun.write(packet)

    def start_call(self, name: str, args: tuple[Any, ...]) -> CallHandle:
        fn = getattr(self, "sys_" + name, None)
        if fn is None:
            raise ScriptUsageError(f"system call {name}() is not supported by the kernel runner")
        h = CallHandle()
        self.calls.put((fn, args, h))
        deadline = time.monotonic() + BLOCK_DETECT_S
        time.sleep(0)
        while not h.done and time.monotonic() < deadline:
            if self.in_call and self._worker_sleeping():
                break
            time.sleep(0.0001)
        self._raise_usage(h)
        return h

    def wait_call(self, h: CallHandle, limit: int | None) -> bool:
        end = limit if limit is not None else self.now() + int(WAIT_CAP_S * 1e6)
        with self.cond:
            while not h.done:
                left = end - self.now()
                if left <= 0:
                    break
                self.cond.wait(left / 1e6)
        self._raise_usage(h)
        return h.done

    @staticmethod
    def _raise_usage(h: CallHandle) -> None:
        if h.exc is not None:
            raise h.exc

    def sysctl(self, key: str, value: str) -> str | None:
        self._ensure()
        key = key.replace("/", ".")
        if not _SYSCTL_RE.fullmatch(key):
            raise ScriptUsageError(f"sysctl {key}: only net.ipv4.*, net.ipv6.* and net.core.* keys are allowed")
        path = "/proc/sys/" + key.replace(".", "/")
        with in_netns(self.netns_name):
            try:
                with open(path, "w") as f:
                    f.write(value + "\n")
                if key == "net.ipv4.tcp_congestion_control":
                    self.cc_override = None
            except PermissionError:
                if key != "net.ipv4.tcp_congestion_control":
                    raise ScriptUsageError(f"sysctl {key}={value}: permission denied") from None
                # Only the initial namespace may default to a "restricted" algorithm (one
                # missing from the host's tcp_allowed_congestion_control); set it on each
                # socket instead (TCP_CONGESTION, allowed with CAP_NET_ADMIN).
                self.cc_override = value
            except FileNotFoundError:
                raise ScriptUsageError(f"sysctl {key} does not exist in this kernel's namespace") from None
            except OSError as exc:
                raise ScriptUsageError(f"sysctl {key}={value}: {exc.strerror}") from None
        return None

    def tcp_info(self, live_fd: int | None, key: tuple[str, int, str, int] | None) -> dict[str, Any]:
        s = self.socks.get(live_fd) if live_fd is not None else None
        if s is None:
            raise ScriptUsageError("tcp_info needs the socket under test to have a file descriptor (accept() it first)")
        return parse_tcp_info(s.getsockopt(IPPROTO_TCP, TCP_INFO, 512))

    # -- system calls (run on the worker thread, inside the namespace) ---------------------
    def _s(self, fd: int) -> socket.socket:
        s = self.socks.get(fd)
        if s is None:
            raise OSError(9, os.strerror(9))
        return s

    def sys_socket(self, domain: int, type_: int, proto: int) -> int:
        s = socket.socket(domain, type_, proto)
        self.socks[s.fileno()] = s
        if self.cc_override and type_ & 0xF == socket.SOCK_STREAM:
            s.setsockopt(IPPROTO_TCP, TCP_CONGESTION, self.cc_override.encode())
        return s.fileno()

    def _sockaddr(self, s: socket.socket, addr: str) -> str:
        return self.net.sockaddr(addr) if s.family == socket.AF_INET6 else addr

    def sys_bind(self, fd: int, addr: str, port: int) -> int:
        s = self._s(fd)
        s.bind((self._sockaddr(s, addr), port))
        return 0

    def sys_listen(self, fd: int, backlog: int) -> int:
        self._s(fd).listen(backlog)
        return 0

    def sys_accept(self, fd: int) -> tuple[int, tuple[str, int]]:
        ns, addr = self._s(fd).accept()
        self.socks[ns.fileno()] = ns
        return ns.fileno(), addr

    def sys_connect(self, fd: int, addr: str, port: int) -> int:
        s = self._s(fd)
        s.connect((self._sockaddr(s, addr), port))
        return 0

    def sys_write(self, fd: int, n: int) -> int:
        self._s(fd)
        return os.write(fd, bytes(n))

    def sys_send(self, fd: int, n: int, flags: int) -> int:
        return self._s(fd).send(bytes(n), flags)

    def sys_read(self, fd: int, n: int) -> int:
        self._s(fd)
        return len(os.read(fd, n))

    def sys_recv(self, fd: int, n: int, flags: int) -> int:
        return len(self._s(fd).recv(n, flags))

    def sys_close(self, fd: int) -> int:
        s = self.socks.pop(fd, None)
        if s is None:
            raise OSError(9, os.strerror(9))
        s.close()
        return 0

    def sys_shutdown(self, fd: int, how: int) -> int:
        self._s(fd).shutdown(how)
        return 0

    def sys_fcntl(self, fd: int, cmd: int, arg: int) -> int:
        self._s(fd)
        if cmd in (SYMBOLS["F_GETFL"], SYMBOLS["F_GETFD"]):
            return fcntl.fcntl(fd, cmd)
        return fcntl.fcntl(fd, cmd, arg)

    def sys_setsockopt(self, fd: int, level: int, opt: int, value: Any) -> int:
        s = self._s(fd)
        if isinstance(value, tuple):
            s.setsockopt(level, opt, struct.pack("ii", *value))
        elif isinstance(value, str):
            s.setsockopt(level, opt, value.encode())
        else:
            s.setsockopt(level, opt, int(value))
        return 0

    def sys_getsockopt(self, fd: int, level: int, opt: int) -> Any:
        s = self._s(fd)
        if (level, opt) == (SOL_SOCKET, SO_LINGER):
            return struct.unpack("ii", s.getsockopt(level, opt, 8))
        if (level, opt) == (IPPROTO_TCP, TCP_INFO):
            s.getsockopt(level, opt, 512)
            return 0
        return s.getsockopt(level, opt)

    def sys_poll(self, fds: tuple[tuple[int, int], ...], timeout_ms: int) -> tuple[int, list[int]]:
        p = select.poll()
        for fd, events in fds:
            p.register(fd, events)
        got = dict(p.poll(timeout_ms))
        revents = [got.get(fd, 0) for fd, _ in fds]
        return sum(1 for r in revents if r), revents
