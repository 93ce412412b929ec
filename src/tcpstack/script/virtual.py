"""The script target "tcpstack": the engine driven directly, in virtual time.

Nothing sleeps: to reach a time the host fires the engine's timers in order
(``Stack.next_deadline`` / ``Stack.poll``), so a script that covers minutes
of TCP runs in milliseconds and gives the same answer every time (the ISNs
and timestamp offsets come from a fixed seed).

System calls are emulated on top of the engine with Linux's socket
semantics (file descriptors from 3, blocking and O_NONBLOCK, errno values,
a pending socket error that one read/write/SO_ERROR consumes, poll(2)
masks as tcp_poll computes them).  A call that would block is a generator
that yields until the engine's state lets it finish; the host retries it
after every packet and timer.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Generator
from typing import Any

from ..tcp import Config, Connection, Listener, Stack, State
from ..wire.errors import MalformedPacket
from ..wire.ip import parse_ip_tcp
from .addressing import Addressing, addressing
from .run import CallHandle, Captured, ScriptUsageError
from .symbols import CA_STATE_NUMBERS, STATE_NUMBERS, SYMBOLS

S = State
SYM = SYMBOLS
O_NONBLOCK = SYM["O_NONBLOCK"]
MSG_DONTWAIT = SYM["MSG_DONTWAIT"]
MSG_NOSIGNAL = SYM["MSG_NOSIGNAL"]
ANY_WAIT_CAP_US = 24 * 3600 * 1_000_000  # `*` and a blocked call give up after a virtual day
SOCKET_TIMEOUT_US = 0  # placeholder: SO_RCVTIMEO/SO_SNDTIMEO are not modelled


def _err(code: int, text: str | None = None) -> OSError:
    import os

    return OSError(code, text or os.strerror(code))


class VSock:
    """One file descriptor: a socket before connect/listen, a listener, or a connection."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.domain = SYM["AF_INET"]
        self.nonblocking = False
        self.bound: tuple[str, int] | None = None
        self.listener: Listener | None = None
        self.conn: Connection | None = None
        self.opts: dict[tuple[int, int], Any] = {}
        self.connected = False  # connect() has reported success (Linux SS_CONNECTED)
        self.rd_shut = False
        self.err_taken = False  # the connection's error was reported once (sock_error)

    # Linux's sk_err: reported once, by whichever call looks first.
    def pending_error(self) -> OSError | None:
        if self.conn is not None and self.conn.error is not None and not self.err_taken:
            return self.conn.error
        return None

    def take_error(self) -> OSError | None:
        e = self.pending_error()
        if e is not None:
            self.err_taken = True
            return _err(e.errno or errno.EIO, e.strerror)
        return None


class _Op:
    __slots__ = ("gen", "handle", "deadline")

    def __init__(self, gen: Generator[int | None, None, Any], handle: CallHandle) -> None:
        self.gen = gen
        self.handle = handle
        self.deadline: int | None = None


class VirtualHost:
    target = "tcpstack"

    def __init__(self, config: Config | None = None, *, seed: int = 1) -> None:
        self.config = config if config is not None else Config()
        self.seed = seed
        self.configure(addressing())
        self.clock = 0
        self.queue: deque[Captured] = deque()
        self.ops: list[_Op] = []
        self.socks: dict[int, VSock] = {}

    # -- driving the engine ----------------------------------------------------------
    def configure(self, net: Addressing) -> None:
        """The stack answers for the script's local address of its IP version (IPv4-mapped
        sockets are IPv4 on the wire, so the engine sees IPv4)."""
        self.net = net
        self.stack = Stack([net.local], self.config, seed=self.seed, name="script")

    def start(self) -> None:
        pass

    def now(self) -> int:
        return self.clock

    def _collect(self) -> None:
        for pkt in self.stack.transmit():
            try:
                src, dst, seg = parse_ip_tcp(pkt)
            except MalformedPacket:  # pragma: no cover - the engine builds valid packets
                continue
            self.queue.append(Captured(self.clock, src, dst, seg))

    def _after_input(self) -> None:
        self._collect()
        self._retry()
        self._collect()

    def _retry(self) -> None:
        progress = True
        while progress and self.ops:
            progress = False
            for op in list(self.ops):
                if self._drive(op):
                    self.ops.remove(op)
                    progress = True

    def _drive(self, op: _Op) -> bool:
        """Run a blocked call one step; True when it has finished."""
        try:
            wake = next(op.gen)
        except StopIteration as stop:
            op.handle.finish(stop.value, None, self.clock)
            self._collect()
            return True
        except OSError as exc:
            op.handle.finish(None, exc, self.clock)
            self._collect()
            return True
        op.deadline = wake
        self._collect()
        return False

    def _next_wake(self) -> int | None:
        cands = [d for d in (self.stack.next_deadline(), *(op.deadline for op in self.ops)) if d is not None]
        return min(cands) if cands else None

    def _step(self, t: int) -> None:
        self.clock = max(self.clock, t)
        self.stack.poll(self.clock)
        self._after_input()

    def advance(self, limit: int | None, stop: Any = None) -> bool:
        """Fire timers in order up to ``limit`` (None: while any is pending, up to a
        virtual day); returns True if ``stop()`` became true."""
        cap = self.clock + ANY_WAIT_CAP_US
        while True:
            if stop is not None and stop():
                return True
            nxt = self._next_wake()
            if nxt is None or (limit is not None and nxt > limit) or (limit is None and nxt > cap):
                break
            self._step(nxt)
        if limit is not None and limit > self.clock:
            self.clock = limit
            self._retry()
        return stop is not None and bool(stop())

    def wait_until(self, t: int) -> None:
        self.advance(t)

    def sniff(self, deadline: int | None) -> Captured | None:
        if not self.queue:
            self.advance(deadline, lambda: bool(self.queue))
        return self.queue.popleft() if self.queue else None

    def inject(self, packet: bytes) -> None:
        self.stack.receive(packet, self.clock)
        self._after_input()

    def start_call(self, name: str, args: tuple[Any, ...]) -> CallHandle:
        h = CallHandle()
        fn = getattr(self, "sys_" + name, None)
        if fn is None:
            raise ScriptUsageError(f"system call {name}() is not supported on tcpstack")
        try:
            r = fn(*args)
        except OSError as exc:
            h.finish(None, exc, self.clock)
            self._after_input()
            return h
        if isinstance(r, Generator):
            op = _Op(r, h)
            if not self._drive(op):
                self.ops.append(op)
        else:
            h.finish(r, None, self.clock)
        self._after_input()
        return h

    def wait_call(self, h: CallHandle, limit: int | None) -> bool:
        if h.done:
            return True
        return self.advance(limit, lambda: h.done)

    def sysctl(self, key: str, value: str) -> str | None:
        try:
            self.config.set(key, value)
        except KeyError:
            return f"sysctl {key} is not modelled by tcpstack; ignored"
        except ValueError as exc:
            raise ScriptUsageError(f"sysctl {key}={value}: {exc}") from None
        return None

    def close(self) -> None:
        self.ops.clear()

    # -- tcp_info ---------------------------------------------------------------------
    def tcp_info(self, live_fd: int | None, key: tuple[str, int, str, int] | None) -> dict[str, Any]:
        sock = self.socks.get(live_fd) if live_fd is not None else None
        conn = sock.conn if sock is not None else None
        if conn is None and key is not None:
            conn = self.stack.conns.get(key)
            if conn is None and key in self.stack.timewait:
                return {"tcpi_state": STATE_NUMBERS["TIME-WAIT"]}
        if conn is None:
            if sock is not None and sock.listener is not None:
                return {"tcpi_state": STATE_NUMBERS["LISTEN"]}
            if sock is not None:
                return {"tcpi_state": STATE_NUMBERS["CLOSED"]}
            raise ScriptUsageError("no connection for tcp_info (the socket under test is unknown to the stack)")
        info = conn.info(self.clock)
        out: dict[str, Any] = {f"tcpi_{k}": v for k, v in info.items()}
        out["tcpi_state"] = STATE_NUMBERS[str(info["state"])]
        if sock is not None and conn.state is S.TIME_WAIT:
            # The socket itself is closed once a TIME-WAIT record takes over its 4-tuple
            # (Linux: tcp_time_wait() then tcp_done() on the full socket).
            out["tcpi_state"] = STATE_NUMBERS["CLOSED"]
        out["tcpi_ca_state"] = CA_STATE_NUMBERS.get(str(info["ca_state"]), 0)
        opts = info.get("options") or []
        assert isinstance(opts, list)
        out["tcpi_options"] = (1 if "ts" in opts else 0) | (2 if "sack" in opts else 0) | (4 if "wscale" in opts else 0) \
            | (8 if "ecn" in opts else 0) | (16 if "ecnseen" in opts else 0)  # TCPI_OPT_ECN, TCPI_OPT_ECN_SEEN
        return out

    # -- system calls -----------------------------------------------------------------
    def _sock(self, fd: int) -> VSock:
        s = self.socks.get(fd)
        if s is None:
            raise _err(errno.EBADF)
        return s

    def _new_fd(self) -> int:
        fd = 3
        while fd in self.socks:
            fd += 1
        return fd

    def sys_socket(self, domain: int, type_: int, proto: int) -> int:
        if domain not in (SYM["AF_INET"], SYM["AF_INET6"]):
            raise _err(errno.EAFNOSUPPORT)
        if type_ & 0xF != SYM["SOCK_STREAM"]:
            raise _err(errno.ESOCKTNOSUPPORT if type_ & 0xF == SYM["SOCK_RAW"] else errno.EPROTONOSUPPORT)
        if proto not in (0, SYM["IPPROTO_TCP"]):
            raise _err(errno.EPROTONOSUPPORT)
        fd = self._new_fd()
        s = VSock(fd)
        s.domain = domain
        s.nonblocking = bool(type_ & SYM["SOCK_NONBLOCK"])
        self.socks[fd] = s
        return fd

    def _port_in_use(self, s: VSock, addr: str, port: int) -> bool:
        reuse = bool(s.opts.get((SYM["SOL_SOCKET"], SYM["SO_REUSEADDR"])))
        for other in self.socks.values():
            if other is s or other.bound is None or other.bound[1] != port:
                continue
            other_reuse = bool(other.opts.get((SYM["SOL_SOCKET"], SYM["SO_REUSEADDR"])))
            if not (reuse and other_reuse and other.listener is None):
                return True
        if not reuse:
            for key in (*self.stack.conns, *self.stack.timewait):
                if key[1] == port:
                    return True
        return False

    def _check_family(self, s: VSock, addr: str) -> None:
        """An AF_INET socket cannot take an IPv6 address (Linux: EAFNOSUPPORT for the
        wrong sockaddr family); an AF_INET6 one takes both (IPv4 as ::ffff:a.b.c.d)."""
        if ":" in addr and s.domain != SYM["AF_INET6"]:
            raise _err(errno.EAFNOSUPPORT)

    def sys_bind(self, fd: int, addr: str, port: int) -> int:
        s = self._sock(fd)
        self._check_family(s, addr)
        if s.bound is not None or s.conn is not None:
            raise _err(errno.EINVAL)
        if self._port_in_use(s, addr, port):
            raise _err(errno.EADDRINUSE)
        s.bound = (addr, port)
        return 0

    def sys_listen(self, fd: int, backlog: int) -> int:
        s = self._sock(fd)
        if s.conn is not None:
            raise _err(errno.EINVAL)
        if s.listener is not None:
            s.listener.set_backlog(backlog)
            return 0
        if s.bound is None:
            local = self.net.local
            s.bound = (local, self.stack._ephemeral_port(local, self.net.unspecified, 0, self.clock))
        reuse = bool(s.opts.get((SYM["SOL_SOCKET"], SYM["SO_REUSEADDR"])))
        s.listener = self.stack.listen(s.bound[1], self.clock, addr=s.bound[0], backlog=max(backlog, 0), reuse=reuse)
        return 0

    def sys_accept(self, fd: int) -> Generator[int | None, None, tuple[int, tuple[str, int]]]:
        s = self._sock(fd)
        if s.listener is None:
            raise _err(errno.EINVAL)
        lst = s.listener
        while True:
            conn = lst.accept()
            if conn is not None:
                break
            if s.nonblocking:
                raise _err(errno.EAGAIN)
            yield None
        ns = VSock(self._new_fd())
        ns.conn = conn
        ns.connected = True
        ns.bound = (conn.local_addr, conn.local_port)
        ns.opts = dict(s.opts)
        self.socks[ns.fd] = ns
        for (level, opt), value in ns.opts.items():
            self._apply(conn, level, opt, value)
        return ns.fd, (conn.remote_addr, conn.remote_port)

    def sys_connect(self, fd: int, addr: str, port: int) -> Generator[int | None, None, int]:
        s = self._sock(fd)
        self._check_family(s, addr)
        if s.listener is not None:
            raise _err(errno.EISCONN)
        conn = s.conn
        if conn is not None:
            if s.connected:
                raise _err(errno.EISCONN)
            # A second connect() on a connecting socket (Linux SS_CONNECTING).
            if conn.state in (S.SYN_SENT, S.SYN_RECEIVED):
                if s.nonblocking:
                    raise _err(errno.EALREADY)
            else:
                return (yield from self._connect_result(s, conn))
        else:
            cfg_port = s.bound[1] if s.bound is not None else None
            local = s.bound[0] if s.bound is not None else None
            opts = dict(s.opts)

            def setup(c: Connection) -> None:
                for (level, opt), value in opts.items():
                    self._apply(c, level, opt, value)

            conn = self.stack.connect(addr, port, self.clock, local_addr=local, local_port=cfg_port, setup=setup)
            s.conn = conn
            s.err_taken = False
            if s.bound is None:
                s.bound = (conn.local_addr, conn.local_port)
            if s.nonblocking:
                raise _err(errno.EINPROGRESS)
        while conn.state in (S.SYN_SENT, S.SYN_RECEIVED):
            yield None
        return (yield from self._connect_result(s, conn))

    def _connect_result(self, s: VSock, conn: Connection) -> Generator[int | None, None, int]:
        if conn.state is S.CLOSED:
            err = s.take_error()
            s.conn = None  # Linux disconnects the socket: a new connect() starts over
            raise err if err is not None else _err(errno.ECONNABORTED)
        s.connected = True
        return 0
        yield  # a generator

    def _writable_conn(self, s: VSock) -> Connection:
        conn = s.conn
        if conn is None:
            raise _err(errno.EPIPE)
        return conn

    def sys_write(self, fd: int, n: int) -> Generator[int | None, None, int]:
        return self.sys_send(fd, n, 0)

    def sys_send(self, fd: int, n: int, flags: int) -> Generator[int | None, None, int]:
        s = self._sock(fd)
        if flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL):
            raise ScriptUsageError(f"send() flags {flags:#x} are not supported on tcpstack (MSG_DONTWAIT, MSG_NOSIGNAL are)")
        nonblock = s.nonblocking or bool(flags & MSG_DONTWAIT)
        if s.listener is not None:
            raise _err(errno.EPIPE)
        conn = self._writable_conn(s)
        sent = 0
        while True:
            err = s.take_error()
            if err is not None:
                if sent:
                    return sent
                raise err
            st = conn.state
            if st in (S.SYN_SENT, S.SYN_RECEIVED):
                if nonblock:
                    raise _err(errno.EAGAIN)
                yield None
                continue
            if n == 0:
                return 0
            try:
                k = conn.send(bytes(n - sent), self.clock)
            except OSError as exc:
                if sent:
                    return sent
                if exc.errno in (errno.ENOTCONN, errno.EPIPE) or conn.error is not None:
                    raise _err(errno.EPIPE) from None
                raise
            sent += k
            if sent == n:
                return n
            if nonblock:
                if sent:
                    return sent
                raise _err(errno.EAGAIN)
            yield None

    def sys_read(self, fd: int, n: int) -> Generator[int | None, None, int]:
        return self.sys_recv(fd, n, 0)

    def sys_recv(self, fd: int, n: int, flags: int) -> Generator[int | None, None, int]:
        s = self._sock(fd)
        if flags & ~MSG_DONTWAIT:
            raise ScriptUsageError(f"recv() flags {flags:#x} are not supported on tcpstack (MSG_DONTWAIT is)")
        nonblock = s.nonblocking or bool(flags & MSG_DONTWAIT)
        if s.listener is not None or s.conn is None:
            raise _err(errno.ENOTCONN)
        conn = s.conn
        while True:
            if conn.recvbuf.ready:
                data = conn.recv(n, self.clock)
                return len(data or b"")
            if conn.eof:  # Linux: SOCK_DONE (FIN received) reads 0 even after a reset
                return 0
            err = s.take_error()
            if err is not None:
                raise err
            if s.rd_shut or conn.state is S.CLOSED or conn.state is S.TIME_WAIT or conn.error is not None:
                if conn.state is S.CLOSED and not s.connected and conn.error is None:
                    raise _err(errno.ENOTCONN)
                return 0
            if nonblock:
                raise _err(errno.EAGAIN)
            yield None

    def sys_close(self, fd: int) -> int:
        s = self._sock(fd)
        del self.socks[fd]
        if s.listener is not None:
            s.listener.close(self.clock)
        if s.conn is not None:
            s.conn.close(self.clock)
        return 0

    def sys_shutdown(self, fd: int, how: int) -> int:
        s = self._sock(fd)
        if how not in (0, 1, 2):
            raise _err(errno.EINVAL)
        conn = s.conn
        if s.listener is not None:
            if how in (0, 2):  # Linux: SHUT_RD on a listener closes it (tcp_disconnect)
                s.listener.close(self.clock)
                s.listener = None
            return 0
        if conn is None or conn.state is S.CLOSED and not s.connected:
            raise _err(errno.ENOTCONN)
        if how in (0, 2):
            s.rd_shut = True
        if how in (1, 2) and conn.state is not S.CLOSED:
            conn.shutdown(self.clock)
        return 0

    def sys_fcntl(self, fd: int, cmd: int, arg: int) -> int:
        s = self._sock(fd)
        if cmd == SYM["F_GETFL"]:
            return SYM["O_RDWR"] | (O_NONBLOCK if s.nonblocking else 0)
        if cmd == SYM["F_SETFL"]:
            s.nonblocking = bool(arg & O_NONBLOCK)
            return 0
        if cmd == SYM["F_GETFD"]:
            return 0
        if cmd == SYM["F_SETFD"]:
            return 0
        raise _err(errno.EINVAL)

    # -- socket options -----------------------------------------------------------------
    _KNOWN = {
        (1, 2), (1, 9), (1, 13), (1, 8), (1, 7), (1, 15),  # SO_REUSEADDR, KEEPALIVE, LINGER, RCVBUF, SNDBUF, REUSEPORT
        (6, 1), (6, 2), (6, 4), (6, 5), (6, 6), (6, 18), (6, 12),  # TCP_NODELAY MAXSEG KEEP* USER_TIMEOUT QUICKACK
        (6, 3),  # TCP_CORK
    }

    def sys_setsockopt(self, fd: int, level: int, opt: int, value: Any) -> int:
        s = self._sock(fd)
        if (level, opt) not in self._KNOWN:
            raise _err(errno.ENOPROTOOPT, f"Protocol not available (option {level}/{opt} is not implemented by tcpstack)")
        if (level, opt) == (1, 13):
            if not isinstance(value, tuple):
                raise _err(errno.EINVAL)
        elif not isinstance(value, int):
            raise _err(errno.EINVAL)
        elif (level, opt) in ((6, 4), (6, 5), (6, 6)) and not 1 <= value <= 32767:
            raise _err(errno.EINVAL)
        elif (level, opt) == (6, 2) and value and not 88 <= value <= 32767:
            raise _err(errno.EINVAL)
        s.opts[(level, opt)] = value
        if s.conn is not None:
            self._apply(s.conn, level, opt, value)
        return 0

    def _own_config(self, conn: Connection) -> Config:
        if conn.config is self.config:
            conn.config = self.config.copy()
        return conn.config

    def _apply(self, conn: Connection, level: int, opt: int, value: Any) -> None:
        now = self.clock
        if (level, opt) == (6, 1):  # TCP_NODELAY: pending small segments go out (tcp_push_pending_frames)
            conn.set_nodelay(bool(value), now)
        elif (level, opt) == (6, 3):  # TCP_CORK
            conn.set_cork(bool(value), now)
        elif (level, opt) == (1, 9):  # SO_KEEPALIVE
            conn.keepalive = bool(value)
            if conn.keepalive and conn.established and conn.keepalive_at is None:
                conn._arm_keepalive(now)
                conn._rearm()
        elif (level, opt) == (1, 13):  # SO_LINGER
            onoff, secs = value
            conn.linger = secs if onoff else None
        elif (level, opt) == (1, 8):  # SO_RCVBUF (Linux doubles it for overhead; we keep the bytes)
            conn.recvbuf.capacity = max(int(value), 256)
        elif (level, opt) == (1, 7):  # SO_SNDBUF
            conn.sendbuf.capacity = max(int(value), 256)
        elif (level, opt) == (6, 18):  # TCP_USER_TIMEOUT
            conn.user_timeout_ms = int(value)
        elif (level, opt) == (6, 2):  # TCP_MAXSEG: the MSS we announce
            if value:
                conn.rcv_mss = min(conn.rcv_mss, int(value))
        elif (level, opt) == (6, 12):  # TCP_QUICKACK
            if value:
                conn.quickack = max(conn.quickack, 16)
        elif (level, opt) in ((6, 4), (6, 5), (6, 6)):  # TCP_KEEPIDLE / INTVL / CNT: per connection
            cfg = self._own_config(conn)
            if opt == 4:
                cfg.tcp_keepalive_time = int(value)
                if conn.keepalive and conn.keepalive_at is not None:
                    conn._arm_keepalive(now)
                    conn._rearm()
            elif opt == 5:
                cfg.tcp_keepalive_intvl = int(value)
            else:
                cfg.tcp_keepalive_probes = int(value)

    def sys_getsockopt(self, fd: int, level: int, opt: int) -> Any:
        s = self._sock(fd)
        conn = s.conn
        cfg = conn.config if conn is not None else self.config
        key = (level, opt)
        if key == (1, 4):  # SO_ERROR
            err = s.take_error()
            return err.errno if err is not None else 0
        if key == (1, 3):  # SO_TYPE
            return SYM["SOCK_STREAM"]
        if key == (1, 39):  # SO_DOMAIN: AF_INET6 for IPv6 and IPv4-mapped sockets
            return s.domain
        if key == (1, 38):  # SO_PROTOCOL
            return SYM["IPPROTO_TCP"]
        if key == (6, 11):  # TCP_INFO: values are checked with %{ }%
            return 0
        if key == (1, 30):  # SO_ACCEPTCONN
            return int(s.listener is not None)
        if key not in self._KNOWN:
            raise _err(errno.ENOPROTOOPT)
        if key in s.opts:
            v = s.opts[key]
            if key in ((1, 8), (1, 7)):
                return 2 * int(v)  # Linux reports the doubled size
            if key == (1, 13):
                return (1 if v[0] else 0, v[1])
            if key in ((6, 1), (1, 9), (1, 2), (1, 15)):
                return 1 if v else 0
            if key != (6, 2):
                return v
        if key == (1, 13):
            return (0, 0)
        if key == (1, 8):
            return cfg.tcp_rmem[1]
        if key == (1, 7):
            return cfg.tcp_wmem[1]
        if key == (6, 4):
            return cfg.tcp_keepalive_time
        if key == (6, 5):
            return cfg.tcp_keepalive_intvl
        if key == (6, 6):
            return cfg.tcp_keepalive_probes
        if key == (6, 2):  # TCP_MAXSEG: the effective send MSS once connected
            if conn is not None and conn.established:
                return conn.eff_mss()
            return int(s.opts.get(key) or 536)
        return 0

    # -- poll(2) --------------------------------------------------------------------------
    def _poll_mask(self, fd: int) -> int:
        s = self.socks.get(fd)
        if s is None:
            return SYM["POLLNVAL"]
        POLLIN, POLLOUT = SYM["POLLIN"] | SYM["POLLRDNORM"], SYM["POLLOUT"] | SYM["POLLWRNORM"]
        if s.listener is not None:
            return POLLIN if s.listener.accept_queue else 0
        conn = s.conn
        if conn is None:
            return SYM["POLLOUT"] | SYM["POLLHUP"]  # Linux: an unconnected TCP socket is CLOSE
        st = conn.state
        closed = st in (S.CLOSED, S.TIME_WAIT)
        rcv_shut = conn.eof or s.rd_shut or closed
        snd_shut = conn.fin_queued or closed
        mask = 0
        if (rcv_shut and snd_shut) or closed:
            mask |= SYM["POLLHUP"]
        if rcv_shut:
            mask |= POLLIN | SYM["POLLRDHUP"]
        if st not in (S.SYN_SENT, S.SYN_RECEIVED):
            if conn.recvbuf.ready:
                mask |= POLLIN
            if not snd_shut:
                if conn.sendbuf.free >= max(conn.sendbuf.capacity // 3, 1) and not closed:
                    mask |= POLLOUT
            else:
                mask |= POLLOUT
        if s.pending_error() is not None:
            mask |= SYM["POLLERR"]
        return mask

    def sys_poll(self, fds: tuple[tuple[int, int], ...], timeout_ms: int) -> Generator[int | None, None, tuple[int, list[int]]]:
        deadline = None if timeout_ms < 0 else self.clock + timeout_ms * 1000
        always = SYM["POLLERR"] | SYM["POLLHUP"] | SYM["POLLNVAL"]
        while True:
            revents = [self._poll_mask(fd) & (events | always) for fd, events in fds]
            n = sum(1 for r in revents if r)
            if n or timeout_ms == 0 or (deadline is not None and self.clock >= deadline):
                return n, revents
            yield deadline
