"""A socket-like blocking API over tcpstack, so code written for ``socket`` ports
by changing one import::

    from tcpstack import socket          # instead of: import socket
    s = socket.create_connection(("198.18.0.1", 8080))
    s.sendall(b"hello"); print(s.recv(100)); s.close()

Every socket belongs to a running ``Driver`` (``tcpstack.runtime.driver``);
``set_default_driver`` chooses the one ``socket()`` uses when none is given.
Errors are the standard library's: ``ConnectionRefusedError``,
``ConnectionResetError``, ``TimeoutError``, ``BrokenPipeError``,
``BlockingIOError`` (EAGAIN / EINPROGRESS), ``OSError`` with errno
(EADDRINUSE, EADDRNOTAVAIL, ENOTCONN, EISCONN, EINVAL, EBADF).
"""

from __future__ import annotations

import errno
import selectors as _selectors
import socket as _std
from collections.abc import Callable, Mapping
from typing import Any

from ..runtime.driver import Driver
from ..tcp import Connection, Listener, State

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOL_SOCKET = _std.SOL_SOCKET
IPPROTO_TCP = _std.IPPROTO_TCP
SO_REUSEADDR = _std.SO_REUSEADDR
SO_KEEPALIVE = _std.SO_KEEPALIVE
SO_LINGER = _std.SO_LINGER
SO_RCVBUF = _std.SO_RCVBUF
SO_SNDBUF = _std.SO_SNDBUF
SO_ERROR = _std.SO_ERROR
TCP_NODELAY = _std.TCP_NODELAY
TCP_MAXSEG = _std.TCP_MAXSEG
TCP_KEEPIDLE = getattr(_std, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL = getattr(_std, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT = getattr(_std, "TCP_KEEPCNT", 6)
TCP_INFO = getattr(_std, "TCP_INFO", 11)
TCP_QUICKACK = getattr(_std, "TCP_QUICKACK", 12)
TCP_USER_TIMEOUT = getattr(_std, "TCP_USER_TIMEOUT", 18)
SHUT_RD = _std.SHUT_RD
SHUT_WR = _std.SHUT_WR
SHUT_RDWR = _std.SHUT_RDWR
error = OSError
timeout = TimeoutError

_default_driver: Driver | None = None


def set_default_driver(driver: Driver | None) -> None:
    """The driver ``socket()`` uses when none is passed (``tcpstack nc`` sets it)."""
    global _default_driver
    _default_driver = driver


def get_default_driver() -> Driver:
    if _default_driver is None:
        raise OSError(
            errno.ENETDOWN,
            "no tcpstack stack is running in this process: start one with "
            "tcpstack.runtime.start(...) or pass driver= to socket()",
        )
    return _default_driver


_UNSET: Any = object()


class socket:  # noqa: N801 - the stdlib's name, on purpose
    """A TCP socket on the user-space stack (SOCK_STREAM only)."""

    def __init__(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0, *, driver: Driver | None = None) -> None:  # noqa: A002
        if family not in (AF_INET, AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, f"tcpstack sockets are AF_INET or AF_INET6, not {family}")
        if type & 0xF != SOCK_STREAM:
            raise OSError(errno.EPROTONOSUPPORT, "tcpstack implements TCP only: use SOCK_STREAM")
        self.family = family
        self.type = SOCK_STREAM
        self.proto = proto
        self._driver = driver or get_default_driver()
        self._conn: Connection | None = None
        self._listener: Listener | None = None
        self._bound: tuple[str, int] | None = None
        self._timeout: float | None = _std.getdefaulttimeout()
        self._closed = False
        self._opts: dict[tuple[int, int], Any] = {}
        self._connect_error: OSError | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def _stack(self) -> Any:
        return self._driver.stack

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor (the socket is closed)")

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Block per the socket's timeout: None = forever, 0 = non-blocking."""
        if predicate():
            return
        if self._timeout == 0:
            raise BlockingIOError(errno.EAGAIN, f"Resource temporarily unavailable ({what} would block)")
        if not self._driver.wait(lambda: predicate() or self._driver.error is not None, self._timeout):
            raise TimeoutError(f"timed out waiting to {what}")
        if self._driver.error is not None and not predicate():
            raise OSError(errno.ENETDOWN, f"the tcpstack driver stopped: {self._driver.error!r}")

    def _family_addr(self, host: str) -> str:
        if host in ("", "0.0.0.0", "::"):
            return ""
        try:
            if self.family == AF_INET6:
                return _std.inet_ntop(AF_INET6, _std.inet_pton(AF_INET6, host))
            return _std.inet_ntop(AF_INET, _std.inet_pton(AF_INET, host))
        except OSError:
            raise OSError(errno.EINVAL, f"{host!r} is not a numeric {'IPv6' if self.family == AF_INET6 else 'IPv4'} address (tcpstack does no name resolution)") from None

    def _apply_options(self, conn: Connection) -> None:
        for (level, opt), value in self._opts.items():
            _set_conn_option(conn, level, opt, value)

    # ------------------------------------------------------------------ timeouts
    def settimeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # ------------------------------------------------------------------ addresses
    def bind(self, address: tuple[str, int]) -> None:
        self._check_open()
        if self._bound is not None or self._conn is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is already bound)")
        host, port = address[0], int(address[1])
        addr = self._family_addr(host)
        stack = self._stack
        if addr and addr not in stack.addresses:
            raise OSError(errno.EADDRNOTAVAIL, f"Cannot assign requested address {host}: the stack answers for {', '.join(stack.addresses)}")
        if port:
            with self._driver.lock:
                busy = any(k[1] == port and (not addr or k[0] in ("", addr)) for k in stack.listeners)
            if busy:
                raise OSError(errno.EADDRINUSE, f"Address already in use (port {port} has a listener)")
        self._bound = (addr, port)

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        if self._conn is not None:
            return (self._conn.local_addr, self._conn.local_port)
        if self._listener is not None:
            return (self._listener.local_addr or ("::" if self.family == AF_INET6 else "0.0.0.0"), self._listener.local_port)
        if self._bound is not None:
            return (self._bound[0] or "0.0.0.0", self._bound[1])
        return ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        if self._conn is None or not self._conn.established and self._conn.state is not State.SYN_RECEIVED:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return (self._conn.remote_addr, self._conn.remote_port)

    # ------------------------------------------------------------------ passive open
    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self._conn is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is connected)")
        if self._listener is not None:
            self._driver.call(lambda now: self._listener.set_backlog(backlog))  # type: ignore[union-attr]
            return
        if self._bound is None or self._bound[1] == 0:
            raise OSError(errno.EINVAL, "bind() to a port before listen() (tcpstack does not pick listening ports)")
        addr, port = self._bound
        reuse = bool(self._opts.get((SOL_SOCKET, SO_REUSEADDR)))
        lst = self._driver.call(lambda now: self._stack.listen(port, now, addr=addr, backlog=backlog, reuse=reuse))
        lst.waker = self._driver.notify
        self._listener = lst

    def accept(self) -> tuple[socket, tuple[str, int]]:
        self._check_open()
        lst = self._listener
        if lst is None:
            raise OSError(errno.EINVAL, "Invalid argument (call listen() before accept())")
        self._wait(lambda: bool(lst.accept_queue) or self._closed, "accept")
        conn = self._driver.call(lambda now: lst.accept())
        if conn is None:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable (no connection to accept)")
        child = socket(self.family, SOCK_STREAM, driver=self._driver)
        child._conn = conn
        child._opts = dict(self._opts)
        child._timeout = self._timeout if self._timeout != 0 else None
        with self._driver.lock:
            conn.waker = self._driver.notify
            child._apply_options(conn)
        return child, (conn.remote_addr, conn.remote_port)

    # ------------------------------------------------------------------ active open
    def connect(self, address: tuple[str, int]) -> None:
        err = self._start_connect(address)
        if err is not None:
            raise err

    def connect_ex(self, address: tuple[str, int]) -> int:
        try:
            err = self._start_connect(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0 if err is None else (err.errno or errno.EINVAL)

    def _start_connect(self, address: tuple[str, int]) -> OSError | None:
        self._check_open()
        if self._listener is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is listening)")
        conn = self._conn
        if conn is None:
            host, port = address[0], int(address[1])
            remote = self._family_addr(host)
            if not remote:
                raise OSError(errno.EINVAL, "connect() needs a destination address")
            local_addr = self._bound[0] or None if self._bound else None
            local_port = self._bound[1] or None if self._bound else None

            def do(now: int) -> Connection:
                c = self._stack.connect(remote, port, now, local_addr=local_addr, local_port=local_port, setup=self._apply_options)
                c.waker = self._driver.notify
                return c

            conn = self._conn = self._driver.call(do)
        elif conn.established:
            return OSError(errno.EISCONN, "Transport endpoint is already connected")
        done = lambda: conn.state not in (State.SYN_SENT, State.SYN_RECEIVED)  # noqa: E731
        if self._timeout == 0 and not done():
            return BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        try:
            self._wait(done, "connect")
        except TimeoutError:
            self._driver.call(lambda now: conn.abort(now))
            self._conn = None
            raise
        if conn.error is not None:
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

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        conn = self._connected()
        if not len(data):
            return 0
        self._wait(lambda: conn.writable, "send")
        return self._driver.call(lambda now: conn.send(data, now))

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        mv = memoryview(data).cast("B")
        while mv:
            n = self.send(mv, flags)
            mv = mv[n:]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        conn = self._connected()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""
        self._wait(lambda: conn.readable, "recv")
        got = self._driver.call(lambda now: conn.recv(bufsize, now))
        return b"" if got is None else got

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        mv = memoryview(buffer).cast("B")
        n = nbytes or len(mv)
        data = self.recv(n, flags)
        mv[: len(data)] = data
        return len(data)

    def shutdown(self, how: int) -> None:
        conn = self._connected()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise OSError(errno.EINVAL, "shutdown() takes SHUT_RD, SHUT_WR or SHUT_RDWR")

        def do(now: int) -> None:
            if how in (SHUT_RD, SHUT_RDWR):
                conn.shut_rd = True
            if how in (SHUT_WR, SHUT_RDWR) and conn.state not in (State.CLOSED, State.TIME_WAIT):
                conn.shutdown(now)

        self._driver.call(do)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            conn = self._conn
            self._driver.call(lambda now: conn.close(now))
        if self._listener is not None:
            lst = self._listener
            self._driver.call(lambda now: lst.close(now))
        with self._driver.cond:
            self._driver.cond.notify_all()

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "tcpstack sockets have no kernel file descriptor to detach")

    def fileno(self) -> int:
        """tcpstack sockets have no kernel fd; use tcpstack.api.socket.Selector to multiplex."""
        return -1

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = self._conn or self._listener or ("closed" if self._closed else "unconnected")
        return f"<tcpstack.socket {what!r}>"

    # ------------------------------------------------------------------ options
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        self._check_open()
        if isinstance(value, (bytes, bytearray)) and (level, optname) == (SOL_SOCKET, SO_LINGER):
            import struct

            onoff, secs = struct.unpack("ii", bytes(value)[:8])
            value = (onoff, secs)
        elif isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(bytes(value)[:4], "little")
        _validate_option(level, optname, value)
        self._opts[(level, optname)] = value
        conn = self._conn
        if conn is not None:
            self._driver.call(lambda now: _set_conn_option(conn, level, optname, value))

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        self._check_open()
        conn = self._conn
        if (level, optname) == (IPPROTO_TCP, TCP_INFO):
            if conn is None:
                raise OSError(errno.ENOTCONN, "TCP_INFO needs a connected socket")
            return self.tcp_info()
        if (level, optname) == (SOL_SOCKET, SO_ERROR):
            err = (conn.error if conn is not None else None) or self._connect_error
            return err.errno if err is not None and err.errno else 0
        if conn is not None:
            return self._driver.call(lambda now: _get_conn_option(conn, level, optname))
        if (level, optname) in self._opts:
            v = self._opts[(level, optname)]
            return v
        return _default_option(self._stack.config, level, optname)

    def tcp_info(self) -> dict[str, Any]:
        """Linux's struct tcp_info as a dict (tcpi_* names without the prefix)."""
        conn = self._connected()
        return self._driver.call(lambda now: conn.info(now))

    # ------------------------------------------------------------------ readiness (Selector)
    def _readable(self) -> bool:
        if self._closed:
            return True
        if self._listener is not None:
            return self._listener.readable
        return self._conn is not None and self._conn.readable

    def _writable(self) -> bool:
        if self._closed:
            return True
        c = self._conn
        return c is not None and (c.writable or c.state is State.CLOSED)


def _validate_option(level: int, opt: int, value: Any) -> None:
    known = {
        (SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_KEEPALIVE), (SOL_SOCKET, SO_LINGER),
        (SOL_SOCKET, SO_RCVBUF), (SOL_SOCKET, SO_SNDBUF), (IPPROTO_TCP, TCP_NODELAY),
        (IPPROTO_TCP, TCP_MAXSEG), (IPPROTO_TCP, TCP_KEEPIDLE), (IPPROTO_TCP, TCP_KEEPINTVL),
        (IPPROTO_TCP, TCP_KEEPCNT), (IPPROTO_TCP, TCP_USER_TIMEOUT), (IPPROTO_TCP, TCP_QUICKACK),
    }
    if (level, opt) not in known:
        raise OSError(errno.ENOPROTOOPT, f"Protocol not available (option {level}/{opt} is not implemented by tcpstack)")
    if (level, opt) == (SOL_SOCKET, SO_LINGER):
        if not (isinstance(value, tuple) and len(value) == 2):
            raise OSError(errno.EINVAL, "SO_LINGER takes (onoff, seconds) or struct linger bytes")
    elif not isinstance(value, int) or value < 0:
        raise OSError(errno.EINVAL, f"option {level}/{opt} takes a non-negative integer")


def _set_conn_option(conn: Connection, level: int, opt: int, value: Any) -> None:
    if (level, opt) == (IPPROTO_TCP, TCP_NODELAY):
        conn.nodelay = bool(value)
        if conn.nodelay and conn.established:
            conn._push(conn.last_send_at)  # pending small segments go out (Linux does too)
    elif (level, opt) == (SOL_SOCKET, SO_KEEPALIVE):
        conn.keepalive = bool(value)
        if conn.keepalive and conn.established and conn.keepalive_at is None:
            conn._arm_keepalive(conn.last_send_at)
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
        if value:
            conn.rcv_mss = min(conn.rcv_mss, max(int(value), 88))
    elif (level, opt) == (IPPROTO_TCP, TCP_QUICKACK):
        if value:
            conn.quickack = max(conn.quickack, 16)


def _get_conn_option(conn: Connection, level: int, opt: int) -> Any:
    if (level, opt) == (IPPROTO_TCP, TCP_NODELAY):
        return int(conn.nodelay)
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
        return conn.snd_mss if conn.established else conn.rcv_mss
    return _default_option(conn.config, level, opt)


def _default_option(cfg: Any, level: int, opt: int) -> Any:
    defaults: Mapping[tuple[int, int], Any] = {
        (IPPROTO_TCP, TCP_NODELAY): 0,
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
    }
    if (level, opt) not in defaults:
        raise OSError(errno.ENOPROTOOPT, f"Protocol not available (option {level}/{opt})")
    return defaults[(level, opt)]


def create_connection(address: tuple[str, int], timeout: float | None = _UNSET, source_address: tuple[str, int] | None = None, *, driver: Driver | None = None) -> socket:
    """Like socket.create_connection (numeric addresses only)."""
    host = address[0]
    fam = AF_INET6 if ":" in host else AF_INET
    s = socket(fam, SOCK_STREAM, driver=driver)
    if timeout is not _UNSET:
        s.settimeout(timeout)
    if source_address:
        s.bind(source_address)
    try:
        s.connect(address)
    except BaseException:
        s.close()
        raise
    return s


def create_server(address: tuple[str, int], *, family: int = AF_INET, backlog: int | None = None, reuse_port: bool = False, driver: Driver | None = None) -> socket:
    """Like socket.create_server."""
    s = socket(family, SOCK_STREAM, driver=driver)
    s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    s.bind(address)
    s.listen(128 if backlog is None else backlog)
    return s


class Selector(_selectors.BaseSelector):
    """A ``selectors`` selector for tcpstack sockets (which have no kernel fd).

    It implements the BaseSelector interface (register/unregister/modify/select
    /get_map), so code written against ``selectors.DefaultSelector`` works
    unchanged when it only multiplexes tcpstack sockets.
    """

    def __init__(self, driver: Driver | None = None) -> None:
        self._driver = driver
        self._map: dict[int, _selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> _selectors.SelectorKey:
        if not isinstance(fileobj, socket):
            raise ValueError("tcpstack's Selector multiplexes tcpstack sockets only")
        if not events or events & ~(_selectors.EVENT_READ | _selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if id(fileobj) in self._map:
            raise KeyError(f"{fileobj!r} is already registered")
        if self._driver is None:
            self._driver = fileobj._driver
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
            if ev:
                out.append((key, ev))
        return out

    def select(self, timeout: float | None = None) -> list[tuple[_selectors.SelectorKey, int]]:
        if not self._map or self._driver is None:
            return []
        result: list[tuple[_selectors.SelectorKey, int]] = []

        def check() -> bool:
            nonlocal result
            result = self._ready()
            return bool(result)

        if timeout is not None and timeout <= 0:
            with self._driver.lock:
                check()
            return result
        self._driver.wait(check, timeout)
        return result

    def get_map(self) -> Mapping[Any, _selectors.SelectorKey]:
        return {k.fileobj: k for k in self._map.values()}

    def close(self) -> None:
        self._map.clear()
