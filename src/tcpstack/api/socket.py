"""A socket-like blocking API over tcpstack, so code written for ``socket`` ports
by changing one import::

    from tcpstack import socket          # instead of: import socket
    from tcpstack.runtime.host import Host

    with Host(netns="tcpstack-demo") as host:
        socket.set_default_driver(host)
        s = socket.create_connection(("198.18.0.1", 8080))
        s.sendall(b"hello"); print(s.recv(100)); s.close()

Every socket belongs to a running ``Driver`` (``tcpstack.runtime.driver``);
``set_default_driver`` chooses the one ``socket()`` uses when none is given
(a ``Host`` is accepted wherever a driver is).  User calls enter the engine
under the driver's lock and block on its condition variable, so any number of
threads may use any number of sockets.

Errors are the standard library's: ``ConnectionRefusedError``,
``ConnectionResetError``, ``TimeoutError``, ``BrokenPipeError``,
``BlockingIOError`` (EAGAIN / EINPROGRESS / EALREADY), ``OSError`` with errno
(EADDRINUSE, EADDRNOTAVAIL, ENOTCONN, EISCONN, EINVAL, EBADF, ENETDOWN when
the stack is stopped).

Where this differs from a kernel socket, on purpose:

* no file descriptor: ``fileno()`` is -1, so multiplex with :class:`Selector`
  (a ``selectors.BaseSelector``), not ``select.select``;
* numeric addresses only (no name resolution; ``getaddrinfo`` here accepts
  numeric hosts);
* ``getsockopt(IPPROTO_TCP, TCP_INFO)`` returns a dict (``tcpi_*`` names
  without the prefix), not a packed struct;
* ``SO_RCVBUF``/``SO_SNDBUF`` are kept as given (Linux doubles them) and, set
  on a listener, apply to accepted connections after their handshake;
* ``TCP_KEEPIDLE``/``TCP_KEEPINTVL``/``TCP_KEEPCNT`` override the stack's
  ``tcp_keepalive_*`` tunables for that connection only;
* urgent data (RFC 9293 §3.8.5) is always inline, as with ``SO_OOBINLINE``
  (RFC 6093 recommends it): ``send(data, MSG_OOB)`` makes ``data`` urgent,
  ``recv(MSG_OOB)`` is EINVAL, and, as Linux, a read stops just before the
  urgent mark so that :meth:`socket.sockatmark` (POSIX ``sockatmark()``,
  which Python's socket lacks) turns true there.  Pending urgent data is the
  "exceptional condition": ``EVENT_URGENT`` in :class:`Selector` and the
  third list of :func:`select` (Linux's POLLPRI).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import selectors as _selectors
import socket as _std
import struct
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..runtime.driver import Driver
from ..tcp import Connection, Listener, Stack, State

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOL_SOCKET = _std.SOL_SOCKET
IPPROTO_TCP = _std.IPPROTO_TCP
IPPROTO_IP = _std.IPPROTO_IP
IPPROTO_IPV6 = _std.IPPROTO_IPV6
IP_TOS = _std.IP_TOS
IPV6_TCLASS = getattr(_std, "IPV6_TCLASS", 67)
IP_TTL = _std.IP_TTL
IPV6_UNICAST_HOPS = getattr(_std, "IPV6_UNICAST_HOPS", 16)
SO_REUSEADDR = _std.SO_REUSEADDR
SO_KEEPALIVE = _std.SO_KEEPALIVE
SO_LINGER = _std.SO_LINGER
SO_RCVBUF = _std.SO_RCVBUF
SO_SNDBUF = _std.SO_SNDBUF
SO_ERROR = _std.SO_ERROR
SO_TYPE = _std.SO_TYPE
TCP_NODELAY = _std.TCP_NODELAY
TCP_MAXSEG = _std.TCP_MAXSEG
TCP_KEEPIDLE = getattr(_std, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL = getattr(_std, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT = getattr(_std, "TCP_KEEPCNT", 6)
TCP_INFO = getattr(_std, "TCP_INFO", 11)
TCP_QUICKACK = getattr(_std, "TCP_QUICKACK", 12)
TCP_CORK = getattr(_std, "TCP_CORK", 3)
TCP_USER_TIMEOUT = getattr(_std, "TCP_USER_TIMEOUT", 18)
SHUT_RD = _std.SHUT_RD
SHUT_WR = _std.SHUT_WR
SHUT_RDWR = _std.SHUT_RDWR
MSG_PEEK = _std.MSG_PEEK
MSG_OOB = _std.MSG_OOB
MSG_WAITALL = _std.MSG_WAITALL
MSG_DONTWAIT = getattr(_std, "MSG_DONTWAIT", 0x40)
# The stdlib's MSG_* are enum.IntFlag members, and ``flags & MSG_PEEK`` runs enum's
# Python-level __rand__ (~8 % of a 1-byte round trip): the hot paths test plain ints.
_PEEK, _WAITALL, _DONTWAIT, _OOB = int(MSG_PEEK), int(MSG_WAITALL), int(MSG_DONTWAIT), int(MSG_OOB)
_RECV_FLAGS = _PEEK | _WAITALL | _DONTWAIT
SOMAXCONN = _std.SOMAXCONN
has_ipv6 = True

# Pure helpers of the standard module, re-exported so ported code finds them.
error = OSError
timeout = TimeoutError
gaierror = _std.gaierror
herror = _std.herror
inet_pton = _std.inet_pton
inet_ntop = _std.inet_ntop
inet_aton = _std.inet_aton
inet_ntoa = _std.inet_ntoa
htons = _std.htons
ntohs = _std.ntohs
htonl = _std.htonl
ntohl = _std.ntohl
getdefaulttimeout = _std.getdefaulttimeout
setdefaulttimeout = _std.setdefaulttimeout

__all__ = [
    "AF_INET", "AF_INET6", "IPPROTO_IP", "IPPROTO_IPV6", "IPPROTO_TCP", "IPV6_TCLASS", "IPV6_UNICAST_HOPS", "IP_TOS", "IP_TTL", "MSG_DONTWAIT", "MSG_OOB", "MSG_PEEK", "MSG_WAITALL", "SHUT_RD",
    "SHUT_RDWR", "SHUT_WR", "SOCK_STREAM", "SOL_SOCKET", "SOMAXCONN", "SO_ERROR", "SO_KEEPALIVE",
    "SO_LINGER", "SO_RCVBUF", "SO_REUSEADDR", "SO_SNDBUF", "SO_TYPE", "TCP_CORK", "TCP_INFO", "TCP_KEEPCNT",
    "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_MAXSEG", "TCP_NODELAY", "TCP_QUICKACK", "TCP_USER_TIMEOUT",
    "EVENT_URGENT", "DefaultSelector", "Selector", "SocketType", "select", "create_connection", "create_server", "error",
    "gaierror", "get_default_driver", "getaddrinfo", "getdefaulttimeout", "has_ipv6", "herror",
    "htonl", "htons", "inet_aton", "inet_ntoa", "inet_ntop", "inet_pton", "ntohl", "ntohs",
    "set_default_driver", "setdefaulttimeout", "socket", "timeout",
]

_default_driver: Driver | None = None
_UNSET: Any = object()


def _as_driver(obj: Any) -> Driver:
    """A Driver, or anything with a ``.driver`` (Host, LoopbackHost)."""
    d = getattr(obj, "driver", obj)
    if not isinstance(d, Driver):
        raise TypeError(f"expected a tcpstack Driver or Host, got {obj!r}")
    return d


def set_default_driver(driver: Any) -> Driver | None:
    """The driver (or Host) ``socket()`` uses when none is passed; None to clear.
    Returns the previous one."""
    global _default_driver
    prev = _default_driver
    _default_driver = None if driver is None else _as_driver(driver)
    return prev


def get_default_driver() -> Driver:
    if _default_driver is None:
        raise OSError(
            errno.ENETDOWN,
            "no tcpstack stack is running in this process: start one with "
            "tcpstack.runtime.host.Host(...) and pass it to set_default_driver(), "
            "or pass driver= to socket()",
        )
    return _default_driver


# Sockets bound but not yet connected or listening hold their port here, per
# stack, so that two binds to one port conflict as they do in the kernel.
_bound: weakref.WeakKeyDictionary[Stack, weakref.WeakSet[socket]] = weakref.WeakKeyDictionary()


def _blocking_error(what: str) -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, f"Resource temporarily unavailable ({what} would block)")


class socket:  # noqa: N801 - the stdlib's name, on purpose
    """A TCP socket on the user-space stack (SOCK_STREAM only)."""

    def __init__(
        self,
        family: int = AF_INET,
        type: int = SOCK_STREAM,  # noqa: A002 - the stdlib's parameter name
        proto: int = 0,
        fileno: int | None = None,
        *,
        driver: Any = None,
    ) -> None:
        if fileno is not None:
            raise OSError(errno.EOPNOTSUPP, "tcpstack sockets cannot wrap a kernel file descriptor")
        if family == -1:
            family = AF_INET
        if family not in (AF_INET, AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, f"tcpstack sockets are AF_INET or AF_INET6, not {family}")
        if type != -1 and type & 0xF != SOCK_STREAM:
            raise OSError(errno.EPROTONOSUPPORT, "tcpstack implements TCP only: use SOCK_STREAM")
        if proto not in (0, -1, IPPROTO_TCP):
            raise OSError(errno.EPROTONOSUPPORT, f"protocol {proto} is not TCP")
        self.family = family
        self.type = SOCK_STREAM
        self.proto = IPPROTO_TCP if proto in (0, -1) else proto
        self._driver = get_default_driver() if driver is None else _as_driver(driver)
        self._conn: Connection | None = None
        self._listener: Listener | None = None
        self._bound: tuple[str, int] | None = None
        self._timeout: float | None = _std.getdefaulttimeout()
        self._closed = False
        self._io_refs = 0
        self._opts: dict[tuple[int, int], Any] = {}
        self._connect_error: OSError | None = None  # a failed connect, for SO_ERROR / connect_ex
        self._error_reported = False  # SO_ERROR reads and clears, as in the kernel
        self._shut_rd = False
        self._peeked = b""  # data taken from the engine by recv(MSG_PEEK), served first

    # ------------------------------------------------------------------ helpers
    @property
    def _stack(self) -> Stack:
        return self._driver.stack

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor (the socket is closed)")

    def _deadline(self, nonblocking: bool = False) -> float | None:
        """Absolute time.monotonic() deadline for one call; 0.0 = non-blocking, None = forever."""
        if nonblocking or self._timeout == 0:
            return 0.0
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, ready: Callable[[], bool], what: str, deadline: float | None) -> None:
        """Block until ``ready()`` (evaluated under the driver's lock) or the deadline."""
        if deadline == 0.0:
            raise _blocking_error(what)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ok = self._driver.wait(lambda: ready() or self._closed, remaining)
        if self._closed:
            raise OSError(errno.EBADF, f"Bad file descriptor (the socket was closed during {what})")
        if not ok:
            if not self._driver.running:
                raise self._driver.down_error()
            raise TimeoutError("timed out")

    def _family_addr(self, host: str) -> str:
        if host in ("", "0.0.0.0", "::"):
            return ""
        fam = self.family
        try:
            return _std.inet_ntop(fam, _std.inet_pton(fam, host))
        except (OSError, TypeError):
            kind = "IPv6" if fam == AF_INET6 else "IPv4"
            raise _std.gaierror(
                _std.EAI_NONAME, f"{host!r} is not a numeric {kind} address (tcpstack does no name resolution)"
            ) from None

    def _addr_tuple(self, addr: str, port: int) -> tuple[Any, ...]:
        if self.family == AF_INET6:
            return (addr, port, 0, 0)
        return (addr, port)

    def _apply_options(self, conn: Connection, now: int) -> None:
        for (level, opt), value in self._opts.items():
            _set_conn_option(conn, level, opt, value, now)

    def _reuse(self) -> bool:
        return bool(self._opts.get((SOL_SOCKET, SO_REUSEADDR)))

    # ------------------------------------------------------------------ timeouts
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # ------------------------------------------------------------------ addresses
    def _port_conflict(self, addr: str, port: int) -> str | None:
        """Why (addr, port) cannot be bound, or None. Under the driver's lock."""
        stack = self._stack
        reuse = self._reuse()

        def overlaps(a: str) -> bool:
            return not a or not addr or a == addr

        for a, p in stack.listeners:
            if p == port and overlaps(a):
                return "a listening socket"
        for s in _bound.get(stack, ()):
            if s is self or s._closed or s._bound is None or s._bound[1] != port or not overlaps(s._bound[0]):
                continue
            if not (reuse and s._reuse()):
                return "another socket"
        if not reuse:
            for k in stack.conns:
                if k[1] == port and overlaps(k[0]):
                    return "a connection (set SO_REUSEADDR)"
            for k in stack.timewait:
                if k[1] == port and overlaps(k[0]):
                    return "a connection in TIME-WAIT (set SO_REUSEADDR)"
        return None

    def _pick_port(self, addr: str) -> int:
        lo, hi = self._stack.config.ip_local_port_range
        span = hi - lo + 1
        start = self._stack.rng.randrange(span)
        for i in range(span):
            port = lo + (start + i) % span
            if self._port_conflict(addr, port) is None:
                return port
        raise OSError(errno.EADDRINUSE, f"Address already in use (no free port in {lo}-{hi})")

    def bind(self, address: tuple[Any, ...]) -> None:
        self._check_open()
        if self._bound is not None or self._conn is not None or self._listener is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is already bound)")
        host, port = address[0], int(address[1])
        if not 0 <= port <= 65535:
            raise OverflowError("bind(): port must be 0-65535.")
        addr = self._family_addr(host)
        stack = self._stack
        if addr and addr not in stack.addresses:
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"Cannot assign requested address {host}: the stack answers for {', '.join(stack.addresses)}",
            )
        with self._driver.lock:
            if port == 0:
                port = self._pick_port(addr)
            else:
                why = self._port_conflict(addr, port)
                if why is not None:
                    raise OSError(errno.EADDRINUSE, f"Address already in use (port {port} is held by {why})")
            self._bound = (addr, port)
            _bound.setdefault(stack, weakref.WeakSet()).add(self)

    def getsockname(self) -> tuple[Any, ...]:
        self._check_open()
        wildcard = "::" if self.family == AF_INET6 else "0.0.0.0"
        if self._conn is not None:
            return self._addr_tuple(self._conn.local_addr, self._conn.local_port)
        if self._listener is not None:
            return self._addr_tuple(self._listener.local_addr or wildcard, self._listener.local_port)
        if self._bound is not None:
            return self._addr_tuple(self._bound[0] or wildcard, self._bound[1])
        return self._addr_tuple(wildcard, 0)

    def getpeername(self) -> tuple[Any, ...]:
        self._check_open()
        c = self._conn
        if c is None or c.state in (State.CLOSED, State.SYN_SENT):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._addr_tuple(c.remote_addr, c.remote_port)

    # ------------------------------------------------------------------ passive open
    def listen(self, backlog: int = SOMAXCONN) -> None:
        self._check_open()
        if self._conn is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is connected)")
        backlog = max(int(backlog), 0)
        lst = self._listener
        if lst is not None:
            self._driver.call(lambda now: lst.set_backlog(backlog))
            return
        if self._bound is None:
            self.bind(("", 0))  # as the kernel does: listen() on an unbound socket picks a port
        assert self._bound is not None
        addr, port = self._bound
        reuse = self._reuse()

        tos = self._opts.get(_tos_key(self.family), 0)
        ttl = self._opts.get(_ttl_key(self.family), -1)

        def do(now: int) -> Listener:
            new = self._stack.listen(port, now, addr=addr, backlog=backlog, reuse=reuse)
            new.waker = self._driver.notify
            new.tos = tos
            new.ttl = None if ttl < 0 else ttl
            return new

        self._listener = self._driver.call(do)

    def accept(self) -> tuple[socket, tuple[Any, ...]]:
        self._check_open()
        lst = self._listener
        if lst is None:
            raise OSError(errno.EINVAL, "Invalid argument (call listen() before accept())")
        deadline = self._deadline()

        def take(now: int) -> Connection | None:
            conn = lst.accept()
            if conn is not None:
                conn.waker = self._driver.notify
                child_opts = dict(self._opts)
                for (level, opt), value in child_opts.items():
                    _set_conn_option(conn, level, opt, value, now)
            return conn

        while True:
            conn = self._driver.call(take)
            if conn is not None:
                break
            self._wait(lambda: lst.readable, "accept", deadline)
        child = socket(self.family, SOCK_STREAM, driver=self._driver)
        child._conn = conn
        child._opts = dict(self._opts)
        # As CPython: the accepted socket gets the default timeout, not the listener's.
        child._timeout = _std.getdefaulttimeout()
        return child, child._addr_tuple(conn.remote_addr, conn.remote_port)

    # ------------------------------------------------------------------ active open
    def connect(self, address: tuple[Any, ...]) -> None:
        err = self._connect(address)
        if err is not None:
            raise err

    def connect_ex(self, address: tuple[Any, ...]) -> int:
        try:
            err = self._connect(address)
        except TimeoutError as exc:
            return exc.errno or errno.ETIMEDOUT
        except OSError as exc:
            if isinstance(exc, _std.gaierror):
                raise
            return exc.errno or errno.EINVAL
        if err is None:
            return 0
        return err.errno or errno.EINVAL

    def _connect(self, address: tuple[Any, ...]) -> OSError | None:
        """Start or continue a connect; returns the error to raise (None when connected)."""
        self._check_open()
        if self._listener is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is listening)")
        conn = self._conn
        if conn is not None:
            if conn.state in (State.SYN_SENT, State.SYN_RECEIVED):
                if self._timeout == 0:
                    return BlockingIOError(errno.EALREADY, "Operation already in progress")
            elif conn.error is None:
                return OSError(errno.EISCONN, "Transport endpoint is already connected")
        else:
            host, port = address[0], int(address[1])
            if not 0 < port <= 65535:
                raise OverflowError("connect(): port must be 1-65535.") if port > 65535 else OSError(
                    errno.ECONNREFUSED, "Connection refused (port 0)")
            remote = self._family_addr(host)
            if not remote:
                raise OSError(errno.EINVAL, "connect() needs a destination address")
            local_addr = (self._bound[0] or None) if self._bound else None
            local_port = (self._bound[1] or None) if self._bound else None
            self._connect_error = None
            self._error_reported = False

            def do(now: int) -> Connection:
                c = self._stack.connect(
                    remote, port, now, local_addr=local_addr, local_port=local_port,
                    setup=lambda c: self._apply_options(c, now),
                )
                c.waker = self._driver.notify
                return c

            conn = self._conn = self._driver.call(do)
        pending = lambda: conn.state in (State.SYN_SENT, State.SYN_RECEIVED)  # noqa: E731
        if self._timeout == 0:
            if pending():
                return BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        else:
            try:
                self._wait(lambda: not pending(), "connect", self._deadline())
            except TimeoutError:
                self._driver.call(lambda now: conn.abort(now))
                self._conn = None
                raise
        if conn.error is not None:
            # Failed: the socket may connect again (as a kernel socket after ECONNREFUSED).
            self._conn = None
            self._connect_error = conn.error
            return type(conn.error)(*conn.error.args)
        return None

    # ------------------------------------------------------------------ data
    def _connected(self) -> Connection:
        self._check_open()
        if self._conn is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._conn

    def send(self, data: Any, flags: int = 0) -> int:
        conn = self._connected()
        mv = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if not len(mv):
            return 0
        deadline = self._deadline(bool(flags & _DONTWAIT))
        urgent = bool(flags & _OOB)  # RFC 9293 §3.8.5: the urgent pointer goes past this data
        while True:
            n = self._driver.call(lambda now: conn.send(mv, now, urgent))
            if n:
                return n
            self._wait(lambda: conn.writable or conn.state is State.CLOSED, "send", deadline)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send everything (one deadline for the whole call, as CPython >= 3.5)."""
        conn = self._connected()
        mv = memoryview(data).cast("B")
        deadline = self._deadline(bool(flags & _DONTWAIT))
        urgent = bool(flags & _OOB)
        off, total = 0, len(mv)
        while off < total:
            # A bytes object that fits is queued without a copy; otherwise a
            # zero-copy slice, which the send buffer copies what it takes of.
            chunk: Any = data if not off and isinstance(data, bytes) else mv[off:]

            def send_chunk(now: int, c: Any = chunk) -> int:
                return conn.send(c, now, urgent)

            n = self._driver.call(send_chunk)
            off += n
            if off < total and not n:
                self._wait(lambda: conn.writable or conn.state is State.CLOSED, "sendall", deadline)

    def _recv_once(self, bufsize: int, deadline: float | None, peek: bool) -> bytes:
        conn = self._connected()
        if self._peeked:
            data = self._peeked[:bufsize]
            if not peek:
                self._peeked = self._peeked[len(data):]
            return data
        def take(now: int) -> bytes | None:
            # As Linux's tcp_recvmsg: a read stops just before the urgent mark
            # (sockatmark() is then true), and reads on from it.
            mark = conn.urgent_offset
            return conn.recv(mark if mark and mark < bufsize else bufsize, now)

        while True:
            got = self._driver.call(take)
            if got is not None:
                break
            if self._shut_rd:
                return b""
            self._wait(lambda: conn.readable, "recv", deadline)
        if peek and got:
            self._peeked = got
        return got

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._connected()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags & _OOB:
            # Linux answers EINVAL with SO_OOBINLINE, which tcpstack always has (RFC 6093).
            raise OSError(errno.EINVAL, "urgent data is inline in tcpstack (SO_OOBINLINE): read it with "
                          "recv() without MSG_OOB and find it with sockatmark()")
        unknown = flags & ~_RECV_FLAGS
        if unknown:
            raise OSError(errno.EOPNOTSUPP, f"recv flags {unknown:#x} are not supported by tcpstack")
        if bufsize == 0:
            return b""
        deadline = self._deadline(bool(flags & _DONTWAIT))
        peek = bool(flags & _PEEK)
        data = self._recv_once(bufsize, deadline, peek)
        if not flags & _WAITALL or peek or len(data) == bufsize or not data:
            return data
        parts = [data]
        got = len(data)
        while got < bufsize and not self._driver.call(lambda now: self._at_mark()):  # Linux: WAITALL stops there too
            try:
                more = self._recv_once(bufsize - got, deadline, False)
            except (BlockingIOError, TimeoutError):
                break  # as Linux: a non-blocking or timed-out MSG_WAITALL returns what it has
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        mv = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        n = nbytes or len(mv)
        if n > len(mv):
            raise ValueError("buffer too small for requested bytes")
        data = self.recv(n, flags)
        mv[: len(data)] = data
        return len(data)

    def shutdown(self, how: int) -> None:
        conn = self._connected()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise OSError(errno.EINVAL, "shutdown() takes SHUT_RD, SHUT_WR or SHUT_RDWR")

        def do(now: int) -> None:
            if conn.state is State.CLOSED and conn.error is None:
                raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
            if how in (SHUT_RD, SHUT_RDWR):
                # As Linux: recv() stops blocking and returns b"" once the queue is
                # empty; data still arriving is acknowledged as usual.
                self._shut_rd = True
            if how in (SHUT_WR, SHUT_RDWR) and conn.state not in (State.CLOSED, State.TIME_WAIT):
                conn.shutdown(now)
            if self._shut_rd:
                self._driver.notify()

        self._driver.call(do)

    def close(self) -> None:
        """close(2): release the socket. Deferred while makefile() objects are open."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()
        elif self._driver.running:
            with self._driver.cond:
                self._driver.notify()  # also wakes a thread waiting on the device (direct processing)

    def _real_close(self) -> None:
        d = self._driver
        if d.running:
            conn, lst = self._conn, self._listener
            try:
                if conn is not None:
                    self._close_conn(conn)
                if lst is not None:
                    d.call(lambda now: lst.close(now))
            except OSError:
                if d.running:
                    raise
            with d.cond:
                d.notify()  # also wakes a thread waiting on the device (direct processing)
        s = _bound.get(self._stack)
        if s is not None:
            s.discard(self)

    def _close_conn(self, conn: Connection) -> None:
        """close(2) on the TCB. With SO_LINGER on and a timeout, block until what
        was sent is acknowledged or the timeout passes (then the connection
        carries on, orphaned, as in Linux)."""
        d = self._driver
        onoff, secs = self._opts.get((SOL_SOCKET, SO_LINGER), (0, 0))
        linger = bool(onoff) and secs > 0 and self._timeout != 0

        def do(now: int) -> None:
            conn.close(now)  # the engine drops the waker: a closed socket wants no wake-ups
            if linger:
                conn.waker = d.notify

        d.call(do)
        if linger:
            done = (State.CLOSED, State.TIME_WAIT, State.FIN_WAIT_2)
            d.wait(lambda: conn.state in done, secs)
            with d.lock:
                conn.waker = None

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._real_close()

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None, newline: str | None = None) -> Any:
        """A file object over the socket, as socket.makefile (CPython's own SocketIO)."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _std.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "tcpstack sockets have no kernel file descriptor to detach")

    def dup(self) -> socket:
        raise OSError(errno.EOPNOTSUPP, "tcpstack sockets cannot be duplicated")

    def fileno(self) -> int:
        """tcpstack sockets have no kernel fd; use tcpstack.socket.Selector to multiplex."""
        return -1

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connection(self) -> Connection | None:
        """The engine's TCB (for tests and tools: ``history``, ``info()``...)."""
        return self._conn

    @property
    def listener(self) -> Listener | None:
        return self._listener

    @property
    def driver(self) -> Driver:
        return self._driver

    def __enter__(self) -> socket:
        return self

    def __del__(self) -> None:
        # As CPython: an unclosed socket is closed when collected, with a ResourceWarning.
        # The close runs later on the driver's loop (the collector may have interrupted
        # any thread, even the loop itself in the middle of a segment).
        if getattr(self, "_closed", True) or (self._conn is None and self._listener is None):
            return
        self._closed = True
        conn, lst, d = self._conn, self._listener, self._driver
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            if d.running:
                if conn is not None:
                    d.defer(conn.close)
                if lst is not None:
                    d.defer(lst.close)
        except Exception:  # noqa: S110 - nothing may escape __del__ (e.g. at interpreter exit)
            pass

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = self._conn or self._listener or ("closed" if self._closed else "unconnected")
        return f"<tcpstack.socket {what!r}>"

    # ------------------------------------------------------------------ options
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        self._check_open()
        if (level, optname) == (SOL_SOCKET, SO_LINGER):
            if isinstance(value, (bytes, bytearray)):
                value = struct.unpack("ii", bytes(value)[:8])
            value = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else value
        elif isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(bytes(value)[:4], "little", signed=True)
        elif isinstance(value, bool):
            value = int(value)
        if (level, optname) in ((IPPROTO_IP, IP_TOS), (IPPROTO_IPV6, IPV6_TCLASS)):
            value = _tos_value(self.family, level, optname, value)
        if (level, optname) in ((IPPROTO_IP, IP_TTL), (IPPROTO_IPV6, IPV6_UNICAST_HOPS)):
            value = _ttl_value(self.family, level, optname, value)
        _validate_option(level, optname, value)
        self._opts[(level, optname)] = value
        conn = self._conn
        if conn is not None:
            self._driver.call(lambda now: _set_conn_option(conn, level, optname, value, now))
        lst = self._listener
        if lst is not None and (level, optname) == _tos_key(self.family):
            lst.tos = value  # SYN-ACKs and the connections accepted from now on (as Linux)
        if lst is not None and (level, optname) == _ttl_key(self.family):
            lst.ttl = None if value < 0 else value  # likewise

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        self._check_open()
        if level == IPPROTO_IPV6 and self.family != AF_INET6:
            # As Linux (an IPv4 TCP socket has no IPv6 options to read).
            raise OSError(errno.EOPNOTSUPP, "Operation not supported (IPPROTO_IPV6 options need an "
                          "AF_INET6 socket; use IPPROTO_IP's IP_TOS / IP_TTL)")
        conn = self._conn
        key = (level, optname)
        if key == (IPPROTO_TCP, TCP_INFO):
            if conn is None:
                raise OSError(errno.ENOTCONN, "TCP_INFO needs a connected socket")
            return self.tcp_info()
        if key == (SOL_SOCKET, SO_ERROR):
            err = (conn.error if conn is not None else None) or self._connect_error
            if err is None and conn is not None and conn.soft_error is not None:
                # Linux: no pending error -> the ICMP soft error, cleared on read
                # (sock_getsockopt: xchg(&sk->sk_err_soft, 0)).
                err = conn.soft_error[1]
                self._driver.call(lambda now: setattr(conn, "soft_error", None))
                return err.errno or errno.EIO
            if err is None or self._error_reported:
                return 0
            self._error_reported = True
            return err.errno or errno.EIO
        if key == (SOL_SOCKET, SO_TYPE):
            return SOCK_STREAM
        if key == (SOL_SOCKET, SO_LINGER) and buflen:
            onoff, secs = self._opts.get(key, (0, 0))
            return struct.pack("ii", onoff, secs)
        if conn is not None:
            return self._driver.call(lambda now: _get_conn_option(conn, level, optname, self._opts))
        if key in self._opts and not (key in _TTL_KEYS and self._opts[key] < 0):
            return self._opts[key]
        return _default_option(self._stack.config, level, optname)

    def sockatmark(self) -> bool:
        """POSIX sockatmark(): is the next byte to read the urgent mark (the last
        urgent byte, RFC 9293 MUST-33)?  Python's socket has no such method;
        C code calls sockatmark(3) or ioctl(SIOCATMARK)."""
        self._check_open()
        if self._listener is not None:
            raise OSError(errno.EINVAL, "sockatmark() needs a connected socket, not a listening one")
        return bool(self._driver.call(lambda now: self._at_mark()))

    def urgent_offset(self) -> int | None:
        """tcpstack-only (RFC 9293 MUST-33: how much urgent data is queued): the
        bytes to read before the urgent mark, 0 at the mark; None when no
        urgent data is pending.  All data up to and including the mark is
        urgent (RFC 6093)."""
        self._check_open()
        conn = self._conn
        if conn is None:
            return None
        mark = self._driver.call(lambda now: conn.urgent_offset)
        return None if mark is None else mark + len(self._peeked)

    def _at_mark(self) -> bool:
        conn = self._conn
        return conn is not None and not self._peeked and conn.urgent_offset == 0

    def tcp_info(self) -> dict[str, Any]:
        """Linux's struct tcp_info as a dict (tcpi_* names without the prefix)."""
        conn = self._connected()
        return self._driver.call(lambda now: conn.info(now))

    # ------------------------------------------------------------------ readiness (Selector)
    def _readable(self) -> bool:
        if self._closed or self._peeked:
            return True
        if self._listener is not None:
            return self._listener.readable
        c = self._conn
        if c is None:
            return self._connect_error is not None
        return c.readable or self._shut_rd

    def _urgent(self) -> bool:
        """The exceptional condition (Linux's POLLPRI): urgent data is pending
        and its last byte, the mark, has arrived (TCP_URG_VALID)."""
        c = self._conn
        if c is None or self._closed:
            return False
        mark = c.urgent_offset
        return mark is not None and mark < c.recvbuf.ready

    def _writable(self) -> bool:
        if self._closed:
            return True
        c = self._conn
        if c is None:
            return self._connect_error is not None
        return c.writable or c.state is State.CLOSED


SocketType = socket

_KNOWN_OPTIONS = frozenset({
    (SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_KEEPALIVE), (SOL_SOCKET, SO_LINGER),
    (SOL_SOCKET, SO_RCVBUF), (SOL_SOCKET, SO_SNDBUF), (IPPROTO_TCP, TCP_NODELAY),
    (IPPROTO_TCP, TCP_MAXSEG), (IPPROTO_TCP, TCP_KEEPIDLE), (IPPROTO_TCP, TCP_KEEPINTVL),
    (IPPROTO_TCP, TCP_KEEPCNT), (IPPROTO_TCP, TCP_USER_TIMEOUT), (IPPROTO_TCP, TCP_QUICKACK),
    (IPPROTO_TCP, TCP_CORK), (IPPROTO_IP, IP_TOS), (IPPROTO_IPV6, IPV6_TCLASS),
    (IPPROTO_IP, IP_TTL), (IPPROTO_IPV6, IPV6_UNICAST_HOPS),
})
_TTL_KEYS = ((IPPROTO_IP, IP_TTL), (IPPROTO_IPV6, IPV6_UNICAST_HOPS))
INET_ECN_MASK = 0x03  # RFC 3168: the low two bits of the TOS / Traffic Class octet


def _tos_key(family: int) -> tuple[int, int]:
    """The option that sets the TOS octet of this family's packets."""
    return (IPPROTO_IPV6, IPV6_TCLASS) if family == AF_INET6 else (IPPROTO_IP, IP_TOS)


def _tos_value(family: int, level: int, opt: int, value: Any) -> int:
    """RFC 9293 MUST-48 (Diffserv field), as Linux's setsockopt: IP_TOS keeps
    the low 8 bits of any int (the kernel stores a u8); IPV6_TCLASS takes
    -1..255, -1 meaning the default 0 (RFC 3542 §6.5), and only on AF_INET6
    sockets.  For TCP the ECN bits are the stack's, not the application's:
    Linux clears them (__ip_sock_set_tos, do_ipv6_setsockopt)."""
    if not isinstance(value, int):
        raise TypeError(f"option {level}/{opt} takes an integer, not {type(value).__name__}")
    if opt == IPV6_TCLASS and level == IPPROTO_IPV6:
        if family != AF_INET6:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available (IPV6_TCLASS needs an AF_INET6 socket; use IP_TOS)")
        if not -1 <= value <= 255:
            raise OSError(errno.EINVAL, f"IPV6_TCLASS must be -1..255, got {value}")
        value = max(value, 0)
    return value & 0xFF & ~INET_ECN_MASK


def _ttl_key(family: int) -> tuple[int, int]:
    """The option that sets the TTL / Hop Limit of this family's packets."""
    return (IPPROTO_IPV6, IPV6_UNICAST_HOPS) if family == AF_INET6 else (IPPROTO_IP, IP_TTL)


def _ttl_value(family: int, level: int, opt: int, value: Any) -> int:
    """RFC 9293 MUST-49 (configurable TTL), as Linux's setsockopt: IP_TTL takes
    1..255 (do_ip_setsockopt), IPV6_UNICAST_HOPS -1..255 on AF_INET6 sockets
    only (do_ipv6_setsockopt); -1 means the tunable (ip_default_ttl,
    net.ipv6.conf.all.hop_limit), which getsockopt then reports."""
    if not isinstance(value, int):
        raise TypeError(f"option {level}/{opt} takes an integer, not {type(value).__name__}")
    if opt == IPV6_UNICAST_HOPS and level == IPPROTO_IPV6:
        if family != AF_INET6:
            raise OSError(errno.ENOPROTOOPT,
                          "Protocol not available (IPV6_UNICAST_HOPS needs an AF_INET6 socket; use IP_TTL)")
        if not -1 <= value <= 255:
            raise OSError(errno.EINVAL, f"IPV6_UNICAST_HOPS must be -1..255, got {value}")
    elif value != -1 and not 1 <= value <= 255:
        raise OSError(errno.EINVAL, f"IP_TTL must be 1..255 (or -1 for ip_default_ttl), got {value}")
    return value


def _validate_option(level: int, opt: int, value: Any) -> None:
    if (level, opt) not in _KNOWN_OPTIONS:
        raise OSError(errno.ENOPROTOOPT, f"Protocol not available (option {level}/{opt} is not implemented by tcpstack)")
    if (level, opt) == (SOL_SOCKET, SO_LINGER):
        if not (isinstance(value, tuple) and len(value) == 2 and value[1] >= 0):
            raise OSError(errno.EINVAL, "SO_LINGER takes (onoff, seconds) or struct linger bytes")
    elif not isinstance(value, int) or (value < 0 and (level, opt) not in _TTL_KEYS):
        raise OSError(errno.EINVAL, f"option {level}/{opt} takes a non-negative integer")
    elif (level, opt) in ((IPPROTO_TCP, TCP_KEEPIDLE), (IPPROTO_TCP, TCP_KEEPINTVL), (IPPROTO_TCP, TCP_KEEPCNT)) and value < 1:
        raise OSError(errno.EINVAL, "keepalive times and counts must be at least 1")


_KEEPALIVE_KEYS = {
    TCP_KEEPIDLE: "tcp_keepalive_time",
    TCP_KEEPINTVL: "tcp_keepalive_intvl",
    TCP_KEEPCNT: "tcp_keepalive_probes",
}


def _set_conn_option(conn: Connection, level: int, opt: int, value: Any, now: int) -> None:
    """Apply one option to a TCB (under the driver's lock)."""
    if (level, opt) == (IPPROTO_TCP, TCP_NODELAY):
        conn.set_nodelay(bool(value), now)  # pending small segments go out at once (as Linux)
    elif (level, opt) == (IPPROTO_TCP, TCP_CORK):
        conn.set_cork(bool(value), now)
    elif (level, opt) == (SOL_SOCKET, SO_KEEPALIVE):
        conn.keepalive = bool(value)
        if conn.keepalive and conn.established and conn.keepalive_at is None:
            conn._arm_keepalive(now)
            conn._rearm()
    elif level == IPPROTO_TCP and opt in _KEEPALIVE_KEYS:
        # Per-connection override of the stack's tunable: the TCB gets its own Config.
        changes: dict[str, Any] = {_KEEPALIVE_KEYS[opt]: int(value)}
        conn.config = dataclasses.replace(conn.config, **changes)
        if opt == TCP_KEEPIDLE and conn.keepalive and conn.established:
            conn._arm_keepalive(now)
            conn._rearm()
    elif (level, opt) == (SOL_SOCKET, SO_LINGER):
        onoff, secs = value
        conn.linger = secs if onoff else None
    elif (level, opt) == (SOL_SOCKET, SO_RCVBUF):
        # Linux doubles the value for bookkeeping overhead; we keep it as given.
        conn.recvbuf.capacity = max(int(value), 256)
        conn.user_rcvbuf = True
    elif (level, opt) == (SOL_SOCKET, SO_SNDBUF):
        conn.sendbuf.capacity = max(int(value), 256)
    elif (level, opt) == (IPPROTO_TCP, TCP_USER_TIMEOUT):
        conn.user_timeout_ms = int(value)
    elif (level, opt) == (IPPROTO_TCP, TCP_MAXSEG):
        if value and conn.state in (State.CLOSED, State.SYN_SENT):
            conn.rcv_mss = min(conn.rcv_mss, max(int(value), 88))
    elif (level, opt) == (IPPROTO_TCP, TCP_QUICKACK):
        if value:
            conn.quickack = max(conn.quickack, 16)
    elif (level, opt) == _tos_key(AF_INET6 if ":" in conn.remote_addr else AF_INET):
        conn.tos = value  # SHLD-21: takes effect from the next packet, also mid-connection
    elif (level, opt) == _ttl_key(AF_INET6 if ":" in conn.remote_addr else AF_INET):
        conn.ttl = value if value >= 0 else conn.stack.default_ttl(conn.remote_addr)  # from the next packet


def _get_conn_option(conn: Connection, level: int, opt: int, opts: Mapping[tuple[int, int], Any]) -> Any:
    if (level, opt) == (IPPROTO_TCP, TCP_NODELAY):
        return int(conn.nodelay)
    if (level, opt) == (IPPROTO_TCP, TCP_CORK):
        return int(conn.cork)
    if (level, opt) == (SOL_SOCKET, SO_KEEPALIVE):
        return int(conn.keepalive)
    if (level, opt) == (SOL_SOCKET, SO_LINGER):
        return (0, 0) if conn.linger is None else (1, conn.linger)
    if (level, opt) == (SOL_SOCKET, SO_RCVBUF):
        return conn.recvbuf.capacity
    if (level, opt) == (SOL_SOCKET, SO_SNDBUF):
        return conn.sendbuf.capacity
    if (level, opt) == (IPPROTO_TCP, TCP_USER_TIMEOUT):
        return conn.user_timeout_ms
    if (level, opt) == (IPPROTO_TCP, TCP_MAXSEG):
        # As Linux (tp->mss_cache): payload per segment, options already taken off.
        return conn.eff_mss() if conn.established else conn.rcv_mss
    if level == IPPROTO_TCP and opt in _KEEPALIVE_KEYS:
        return getattr(conn.config, _KEEPALIVE_KEYS[opt])
    if (level, opt) == _tos_key(AF_INET6 if ":" in conn.remote_addr else AF_INET):
        return conn.tos  # inherited from the listener for accepted connections
    if (level, opt) == _ttl_key(AF_INET6 if ":" in conn.remote_addr else AF_INET):
        return conn.ttl  # the value in use: -1 reads back as the tunable (as Linux)
    if (level, opt) in opts and not ((level, opt) in _TTL_KEYS and opts[(level, opt)] < 0):
        return opts[(level, opt)]
    return _default_option(conn.config, level, opt)


def _default_option(cfg: Any, level: int, opt: int) -> Any:
    defaults: Mapping[tuple[int, int], Any] = {
        (IPPROTO_TCP, TCP_NODELAY): 0,
        (IPPROTO_TCP, TCP_CORK): 0,
        (SOL_SOCKET, SO_KEEPALIVE): 0,
        (SOL_SOCKET, SO_REUSEADDR): 0,
        (SOL_SOCKET, SO_LINGER): (0, 0),
        (SOL_SOCKET, SO_RCVBUF): cfg.tcp_rmem[1],
        (SOL_SOCKET, SO_SNDBUF): cfg.tcp_wmem[2],
        (IPPROTO_TCP, TCP_KEEPIDLE): cfg.tcp_keepalive_time,
        (IPPROTO_TCP, TCP_KEEPINTVL): cfg.tcp_keepalive_intvl,
        (IPPROTO_TCP, TCP_KEEPCNT): cfg.tcp_keepalive_probes,
        (IPPROTO_TCP, TCP_USER_TIMEOUT): 0,
        (IPPROTO_TCP, TCP_MAXSEG): 536,
        (IPPROTO_TCP, TCP_QUICKACK): 1,
        (IPPROTO_IP, IP_TOS): 0,
        (IPPROTO_IPV6, IPV6_TCLASS): 0,
        (IPPROTO_IP, IP_TTL): cfg.ip_default_ttl,
        (IPPROTO_IPV6, IPV6_UNICAST_HOPS): cfg.hop_limit,
    }
    if (level, opt) not in defaults:
        raise OSError(errno.ENOPROTOOPT, f"Protocol not available (option {level}/{opt})")
    return defaults[(level, opt)]


def getaddrinfo(host: str | None, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                flags: int = 0) -> list[tuple[int, int, int, str, tuple[Any, ...]]]:
    """socket.getaddrinfo for numeric hosts (tcpstack does no name resolution)."""
    p = int(port or 0)
    if host is None:
        host = "::" if family == AF_INET6 else "0.0.0.0"
    for fam in (AF_INET, AF_INET6):
        if family not in (0, fam):
            continue
        try:
            _std.inet_pton(fam, host)
        except OSError:
            continue
        sockaddr: tuple[Any, ...] = (host, p, 0, 0) if fam == AF_INET6 else (host, p)
        return [(fam, SOCK_STREAM, IPPROTO_TCP, "", sockaddr)]
    raise _std.gaierror(_std.EAI_NONAME, f"{host!r} is not a numeric address (tcpstack does no name resolution)")


def create_connection(
    address: tuple[Any, ...],
    timeout: float | None = _UNSET,
    source_address: tuple[Any, ...] | None = None,
    *,
    all_errors: bool = False,
    driver: Any = None,
) -> socket:
    """Like socket.create_connection (numeric addresses only)."""
    host = address[0]
    fam = AF_INET6 if ":" in host else AF_INET
    s = socket(fam, SOCK_STREAM, driver=driver)
    try:
        if timeout is not _UNSET:
            s.settimeout(timeout)
        if source_address:
            s.bind(source_address)
        s.connect(address)
    except BaseException:
        s.close()
        raise
    return s


def create_server(
    address: tuple[Any, ...],
    *,
    family: int = AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
    driver: Any = None,
) -> socket:
    """Like socket.create_server. A wildcard listener takes connections to every
    address of the stack, IPv4 and IPv6, so ``dualstack_ipv6`` changes nothing."""
    if reuse_port:
        raise ValueError("SO_REUSEPORT not supported by tcpstack")
    if dualstack_ipv6 and family != AF_INET6:
        raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    s = socket(family, SOCK_STREAM, driver=driver)
    try:
        s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(SOMAXCONN if backlog is None else backlog)
    except BaseException:
        s.close()
        raise
    return s


#: Selector event for pending urgent data (poll's POLLPRI, select's exceptional
#: condition).  ``selectors`` defines only EVENT_READ (1) and EVENT_WRITE (2);
#: code that never asks for this bit sees exactly the stdlib's behaviour.
EVENT_URGENT = 4


class Selector(_selectors.BaseSelector):
    """A ``selectors`` selector for tcpstack sockets (which have no kernel fd).

    It implements the BaseSelector interface (register/unregister/modify/select
    /get_map), so code written against ``selectors.DefaultSelector`` works
    unchanged when it only multiplexes tcpstack sockets of one stack.
    Readiness is level-triggered, as with epoll's default.  ``EVENT_URGENT``
    may be added to the events: it is reported while urgent data is pending
    (RFC 9293 MUST-32; see :meth:`socket.sockatmark`).
    """

    def __init__(self, driver: Any = None) -> None:
        self._driver: Driver | None = None if driver is None else _as_driver(driver)
        self._map: dict[int, _selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> _selectors.SelectorKey:
        if not isinstance(fileobj, socket):
            raise ValueError("tcpstack's Selector multiplexes tcpstack sockets only")
        if not events or events & ~(_selectors.EVENT_READ | _selectors.EVENT_WRITE | EVENT_URGENT):
            raise ValueError(f"Invalid events: {events!r}")
        if id(fileobj) in self._map:
            raise KeyError(f"{fileobj!r} is already registered")
        if self._driver is None:
            self._driver = fileobj._driver
        elif fileobj._driver is not self._driver:
            raise ValueError("all sockets of one Selector must belong to the same stack (driver)")
        key = _selectors.SelectorKey(fileobj, id(fileobj), events, data)
        self._map[id(fileobj)] = key
        return key

    def unregister(self, fileobj: Any) -> _selectors.SelectorKey:
        try:
            return self._map.pop(id(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def modify(self, fileobj: Any, events: int, data: Any = None) -> _selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def _ready(self) -> list[tuple[_selectors.SelectorKey, int]]:
        out = []
        for key in self._map.values():
            s: socket = key.fileobj  # type: ignore[assignment]
            ev = 0
            if key.events & _selectors.EVENT_READ and s._readable():
                ev |= _selectors.EVENT_READ
            if key.events & _selectors.EVENT_WRITE and s._writable():
                ev |= _selectors.EVENT_WRITE
            if key.events & EVENT_URGENT and s._urgent():
                ev |= EVENT_URGENT
            if ev:
                out.append((key, ev))
        return out

    def select(self, timeout: float | None = None) -> list[tuple[_selectors.SelectorKey, int]]:
        d = self._driver
        if d is None or not self._map:
            if timeout is not None and timeout > 0:
                time.sleep(timeout)
            return []
        result: list[tuple[_selectors.SelectorKey, int]] = []

        def check() -> bool:
            nonlocal result
            result = self._ready()
            return bool(result)

        if timeout is not None and timeout <= 0:
            with d.lock:
                check()
            return result
        d.wait(check, timeout)
        return result

    def get_map(self) -> Mapping[Any, _selectors.SelectorKey]:
        return {k.fileobj: k for k in self._map.values()}

    def close(self) -> None:
        self._map.clear()


DefaultSelector = Selector


def select(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select`` for tcpstack sockets: readable, writable, and those with
    pending urgent data (the exceptional condition, as Linux reports urgent
    data to select()).  ``timeout`` None blocks; 0 polls."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    sel = Selector()
    try:
        for s in {id(s): s for s in (*rlist, *wlist, *xlist)}.values():
            if isinstance(s, socket) and s._closed:
                # select.select: "file descriptor cannot be a negative integer (-1)"
                raise ValueError(f"{s!r} is closed: select() needs open sockets")
            ev = ((s in rlist and _selectors.EVENT_READ) | (s in wlist and _selectors.EVENT_WRITE)
                  | (s in xlist and EVENT_URGENT))
            sel.register(s, ev)
        ready = sel.select(timeout)
    finally:
        sel.close()
    r = [k.fileobj for k, ev in ready if ev & _selectors.EVENT_READ]
    w = [k.fileobj for k, ev in ready if ev & _selectors.EVENT_WRITE]
    x = [k.fileobj for k, ev in ready if ev & EVENT_URGENT]
    return r, w, x
