"""The asyncio API: stdlib streams and protocols over tcpstack connections.

An application written for ``asyncio.open_connection`` / ``asyncio.start_server``
runs on tcpstack by taking those two functions from :mod:`tcpstack.asyncio`
instead; everything else is the standard library's own code::

    from tcpstack import asyncio as tasyncio

    reader, writer = await tasyncio.open_connection("198.18.0.1", 7)
    writer.write(b"hello\\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()

How: :class:`TcpTransport` is an :class:`asyncio.Transport` over an engine
:class:`~tcpstack.tcp.Connection`, and the streams are the stdlib's
``StreamReader`` / ``StreamReaderProtocol`` / ``StreamWriter`` on top of it,
so ``readline``, ``readexactly``, ``drain``, ``write_eof``, ``close`` /
``wait_closed`` and ``get_extra_info`` are the stdlib's. The transport keeps
the stdlib selector transport's contract:

- ``write()`` hands data to the engine's send buffer (``tcp_wmem[2]``, the
  "socket buffer") at once; what does not fit waits in the transport's own
  buffer, ``get_write_buffer_size()`` counts it, and above the high-water mark
  (64 KiB, ``set_write_buffer_limits``) the protocol is paused, so ``drain()``
  waits until the engine has room again (peer ACKs free the send buffer).
- Reading is pushed: when the engine has in-order data the protocol's
  ``data_received`` gets it; ``pause_reading()`` stops that, the engine's
  receive buffer fills and its advertised window closes (TCP flow control
  back to the peer).
- ``write_eof()`` is the RFC's CLOSE (a FIN after the queued data, receiving
  continues); ``close()`` flushes then is close(2) (unread data makes it an
  abort with RST, as Linux does); ``abort()`` is ABORT (RST).
- ``TCP_NODELAY`` is on, as asyncio sets it on every TCP socket.
- Urgent data (RFC 9293 §3.8.5) is inline (RFC 6093). asyncio has no urgent
  callback, so the hook is the stdlib one that exists: ``data_received`` is
  never given bytes across the urgent mark, and while it runs
  ``transport.get_extra_info("tcpstack_connection").urgent_offset`` is 0 when
  the next byte is the mark (sockatmark), None when no urgent data is pending.
- TLS is the stdlib's own: ``ssl=`` puts asyncio's SSLProtocol between the
  transport and the application's protocol, as ``loop.create_connection``
  does; ``asyncio.BufferedProtocol`` is supported and the transport is
  ``start_tls``-compatible, so ``StreamWriter.start_tls()`` works too.

Unchanged stdlib code: :class:`TcpstackEventLoop` (real time, with an
AioDriver) and :class:`SimEventLoop` (virtual time) route
``loop.create_connection``/``create_server`` to tcpstack, so an application
calling ``asyncio.open_connection``/``asyncio.start_server`` itself runs on
tcpstack without even the import changed.

Which stack: every call takes ``stack=``; without it the task's current stack
(:func:`use_stack`, a context variable, so tasks inherit it) or the loop's
default (:func:`set_default_stack`) is used. A *stack* here is either a driver
(:class:`tcpstack.runtime.aio_driver.AioDriver`: an engine on a TUN device fed
by this event loop) or, under :class:`tcpstack.sim.vloop.VirtualEventLoop`,
a plain :class:`~tcpstack.tcp.Stack` that is a host of the simulated network.
Server handlers run with the server's stack as their current stack.

Addresses are IP literals: tcpstack does no name resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import ipaddress
import logging
import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..sim.vloop import VirtualEventLoop
from ..tcp import Connection, Listener, Stack, State

__all__ = [
    "Binding",
    "ListenerSocket",
    "Server",
    "SimBinding",
    "SimEventLoop",
    "StackStreamsMixin",
    "TcpTransport",
    "TcpstackEventLoop",
    "create_connection",
    "create_server",
    "get_stack",
    "open_connection",
    "set_default_stack",
    "start_server",
    "use_stack",
]

logger = logging.getLogger("tcpstack.asyncio")

S = State
#: asyncio.streams' default buffer limit (64 KiB).
DEFAULT_LIMIT = 2**16
#: Largest read handed to data_received in one call.
READ_CHUNK = 256 * 1024
#: Reads per wake-up before yielding to other callbacks (a new wake-up is scheduled).
READS_PER_WAKE = 64
_GONE = (S.CLOSED, S.TIME_WAIT)


# ---------------------------------------------------------------------------- stacks


class Binding(Protocol):
    """What the API needs from whoever drives an engine: the engine, the event
    loop user calls run on, the engine's clock (µs), and ``changed()``, called
    after every user call so the driver transmits what it queued and re-arms
    its timer."""

    stack: Stack
    loop: asyncio.AbstractEventLoop

    def now(self) -> int: ...

    def changed(self) -> None: ...


class SimBinding:
    """A :class:`Stack` that is a host of the network a VirtualEventLoop runs.

    ``changed()`` has nothing to do: the loop's selector services every host
    (transmit, re-arm) before it advances virtual time, so packets queued by a
    user call leave at the virtual instant of the call.
    """

    __slots__ = ("stack", "loop", "_net")

    def __init__(self, stack: Stack, loop: VirtualEventLoop) -> None:
        self.stack = stack
        self.loop: asyncio.AbstractEventLoop = loop
        self._net = loop.net

    def now(self) -> int:
        return self._net.now

    def changed(self) -> None:
        pass


_current: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "tcpstack_asyncio_stack", default=None
)
_loop_default: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def use_stack(stack: Any) -> Iterator[None]:
    """Make ``stack`` the current one for this task (and tasks it creates) inside the block."""
    token = _current.set(stack)
    try:
        yield
    finally:
        _current.reset(token)


def set_default_stack(stack: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """The stack used on ``loop`` (default: the running loop, or the stack's own)
    when neither ``stack=`` nor :func:`use_stack` chose one. None removes it."""
    if loop is None:
        loop = getattr(stack, "loop", None) or asyncio.get_running_loop()
    if stack is None:
        _loop_default.pop(loop, None)
    else:
        _loop_default[loop] = stack


def get_stack(stack: Any = None) -> Binding:
    """The binding the next call on the running loop would use."""
    loop = asyncio.get_running_loop()
    if stack is None:
        stack = _current.get()
    if stack is None:
        stack = _loop_default.get(loop)
    if stack is None:
        raise OSError(
            errno.ENETDOWN,
            "no tcpstack stack for this task: pass stack=, use tcpstack.asyncio.use_stack(...) or "
            "set_default_stack(...) (an AioDriver on a TUN device, or a simulated host's Stack "
            "under tcpstack.sim.vloop)",
        )
    return _bind(stack, loop)


def _bind(stack: Any, loop: asyncio.AbstractEventLoop) -> Binding:
    if isinstance(stack, Stack):
        if isinstance(loop, VirtualEventLoop):
            return SimBinding(stack, loop)
        raise TypeError(
            "a bare Stack has nobody to feed it packets and timers on this event loop: use an "
            "AioDriver (tcpstack.runtime.aio_driver) for a TUN device, or run under "
            "tcpstack.sim.vloop.VirtualEventLoop for a simulated host"
        )
    if all(hasattr(stack, a) for a in ("stack", "loop", "now", "changed")):
        if stack.loop is not loop:
            raise RuntimeError(f"{stack!r} is driven by another event loop")
        return stack  # type: ignore[no-any-return]
    raise TypeError(f"not a tcpstack stack or driver: {stack!r}")


# ---------------------------------------------------------------------------- addresses


def _ip(host: Any, what: str = "host") -> str:
    """An IP literal in the engine's canonical text form."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0] if isinstance(host, str) else host))
    except ValueError:
        raise socket.gaierror(
            socket.EAI_NONAME,
            f"{what} {host!r} is not an IP address (tcpstack resolves no names)",
        ) from None


def _port(port: Any) -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise OSError(errno.EINVAL, f"invalid port {port!r}") from None
    if not 0 <= p < 65536:
        raise OverflowError(f"port must be 0-65535, got {p}")
    return p


def _sockaddr(addr: str, port: int) -> tuple[Any, ...]:
    """What getsockname()/getpeername() return: (host, port), or a 4-tuple for IPv6."""
    if ":" in addr:
        return (addr, port, 0, 0)
    return (addr, port)


# ---------------------------------------------------------------------------- the transport


class TcpTransport(asyncio.Transport):
    """An asyncio Transport over one engine Connection (see the module docstring)."""

    # loop.start_tls() / StreamWriter.start_tls() may layer the stdlib's TLS on it.
    _start_tls_compatible = True

    def __init__(
        self,
        binding: Binding,
        conn: Connection,
        protocol: asyncio.BaseProtocol,
        server: Server | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        super().__init__(
            {
                "peername": _sockaddr(conn.remote_addr, conn.remote_port),
                "sockname": _sockaddr(conn.local_addr, conn.local_port),
                "socket": None,
                "tcpstack_connection": conn,
            }
        )
        self._binding = binding
        self._loop = binding.loop
        self._conn = conn
        self._protocol = protocol
        self._server = server
        # Protocol callbacks run in the context of whoever created the
        # connection (as the stdlib's add_reader callbacks do), not in whatever
        # context the engine happened to be driven from.
        self._context = context if context is not None else contextvars.copy_context()
        self._buffer: deque[bytes | memoryview] = deque()  # what the engine could not take yet
        self._buffer_size = 0
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._protocol_paused = False
        self._paused = False  # reading
        self._closing = False  # close() or abort() called, or a fatal error
        self._released = False  # the engine connection was closed/aborted by us
        self._lost = False  # connection_lost is scheduled or done
        self._eof_written = False  # write_eof() called
        self._shutdown_done = False
        self._eof_reported = False
        self._protocol_connected = False
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._conn_lost_writes = 0
        self._wake_pending = False
        conn.nodelay = True  # asyncio sets TCP_NODELAY on every TCP transport
        conn.waker = self._waker
        if server is not None:
            server._attach(self)

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<TcpTransport {state} {self._conn!r}>"

    @property
    def connection(self) -> Connection:
        """The engine's TCB (``info()``, counters, options)."""
        return self._conn

    # -- engine side: the waker only schedules -------------------------------
    def _waker(self, _conn: Connection) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon(self._on_wake, context=self._context)

    def _connection_made(self) -> None:
        if self._lost:
            return
        self._protocol_connected = True
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")
            return
        self._waker(self._conn)  # data (or a FIN) may have arrived with the handshake

    def _on_wake(self) -> None:
        self._wake_pending = False
        if self._lost:
            return
        if self._buffer or (self._eof_written and not self._shutdown_done) or self._closing:
            self._flush()
            if self._lost:
                return
        if not self._paused and not self._closing:
            self._read()
        elif self._conn.error is not None:
            self._fatal_error(self._user_error(), None)

    def _user_error(self) -> OSError:
        err = self._conn.error
        assert err is not None
        return type(err)(*err.args)

    def _read(self) -> None:
        conn = self._conn
        now = self._binding.now()
        got = False
        for _ in range(READS_PER_WAKE):
            if self._paused or self._closing:
                break
            mark = conn.urgent_offset  # a read stops just before the urgent mark (as the socket API's)
            try:
                data = conn.recv(mark if mark and mark < READ_CHUNK else READ_CHUNK, now)
            except OSError as exc:
                self._fatal_error(exc, None)
                return
            if data is None:
                break
            got = True
            if not data:
                if not self._eof_reported:
                    self._eof_reported = True
                    try:
                        keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:
                        self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
                        return
                    if not keep_open:
                        self.close()
                break
            try:
                if self._buffered:
                    self._feed_buffered(data)
                else:
                    self._protocol.data_received(data)  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
        else:
            self._waker(conn)  # more to read: let other callbacks run first
        if got:
            self._binding.changed()  # reading opened the window: a window update may be due

    def _feed_buffered(self, data: bytes) -> None:
        """asyncio.BufferedProtocol: copy into the protocol's buffers (get_buffer/buffer_updated)."""
        view = memoryview(data)
        proto: Any = self._protocol
        while view:
            buf = memoryview(proto.get_buffer(len(view))).cast("B")
            n = min(len(buf), len(view))
            if n == 0:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]

    def _flush(self) -> None:
        """Move buffered data into the engine; finish a pending write_eof()/close()."""
        conn = self._conn
        buf = self._buffer
        if buf:
            now = self._binding.now()
            moved = False
            while buf:
                chunk = buf[0]
                try:
                    n = conn.send(chunk, now)
                except OSError as exc:
                    self._fatal_error(exc, None)
                    return
                if n == 0:
                    break
                moved = True
                self._buffer_size -= n
                if n == len(chunk):
                    buf.popleft()
                else:
                    buf[0] = memoryview(chunk)[n:]
                    break
            if moved:
                self._binding.changed()
                self._maybe_resume_protocol()
        if not buf:
            if self._closing:
                self._release()
            elif self._eof_written and not self._shutdown_done:
                self._shutdown()

    def _shutdown(self) -> None:
        self._shutdown_done = True
        conn = self._conn
        try:
            conn.shutdown(self._binding.now())
        except OSError as exc:
            if conn.error is not None:
                self._fatal_error(self._user_error(), None)
                return
            logger.debug("write_eof on %r: %s", conn, exc)
        self._binding.changed()

    def _release(self) -> None:
        """close(2) on the engine connection, then connection_lost(None)."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.waker = None
        try:
            conn.close(self._binding.now())  # returns at once; the engine finishes the FIN exchange
        except OSError as exc:  # pragma: no cover - close() does not raise today
            logger.debug("close on %r: %s", conn, exc)
        self._binding.changed()
        self._schedule_connection_lost(None)

    def _schedule_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._buffer.clear()
        self._buffer_size = 0
        self._loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)

    def _fatal_error(self, exc: BaseException, message: str | None) -> None:
        if message is not None or not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": message or "Fatal error on tcpstack transport",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._buffer.clear()
        self._buffer_size = 0
        if not self._released:
            self._released = True
            conn = self._conn
            conn.waker = None
            if conn.state not in _GONE:
                # close(2): FIN, or RST if data was left unread (as the kernel does).
                conn.close(self._binding.now())
                self._binding.changed()
        self._schedule_connection_lost(exc)

    # -- BaseTransport -------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._release()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol_connected = True

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- ReadTransport -------------------------------------------------------
    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._waker(self._conn)

    # -- WriteTransport ------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._released or self._lost:
            self._conn_lost_writes += 1
            if self._conn_lost_writes >= 5:
                logger.warning("write() on a closed tcpstack transport (data discarded)")
            return
        if not self._buffer:
            try:
                n = self._conn.send(data, self._binding.now())
            except OSError as exc:
                self._fatal_error(exc, None)
                return
            if n:
                self._binding.changed()
                if n == len(data):
                    return
            data = memoryview(data)[n:]
        self._buffer.append(bytes(data))
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if not self._buffer:
            self._shutdown()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        if not self._released:
            self._released = True
            conn = self._conn
            conn.waker = None
            if conn.state not in _GONE:
                conn.abort(self._binding.now())
                self._binding.changed()
        self._schedule_connection_lost(None)

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.pause_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {
                        "message": "protocol.resume_writing() failed",
                        "exception": exc,
                        "transport": self,
                        "protocol": self._protocol,
                    }
                )


# ---------------------------------------------------------------------------- connecting


def _ssl_context(ssl: Any, server_side: bool) -> Any:
    if not ssl:
        return None
    if ssl is True:
        if server_side:
            raise ValueError("a server needs an SSLContext with its certificate, not ssl=True")
        import ssl as _ssl

        return _ssl.create_default_context()
    return ssl


def _ssl_protocol(
    loop: asyncio.AbstractEventLoop,
    app_protocol: asyncio.BaseProtocol,
    ctx: Any,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
    shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseProtocol, asyncio.Future[None]]:
    """The stdlib's own TLS layer (what loop.create_connection(ssl=...) uses), to
    put between a TcpTransport and the application's protocol."""
    from asyncio import sslproto

    waiter: asyncio.Future[None] = loop.create_future()
    proto = sslproto.SSLProtocol(
        loop,
        app_protocol,
        ctx,
        waiter,
        server_side=server_side,
        server_hostname=server_hostname,
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
        ssl_shutdown_timeout=shutdown_timeout,  # type: ignore[arg-type]
    )
    return proto, waiter


async def create_connection(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int | None = None,
    *,
    ssl: Any = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    local_addr: tuple[str, int] | None = None,
    stack: Any = None,
    **_ignored: Any,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """``loop.create_connection`` on tcpstack: active OPEN, then the protocol's
    ``connection_made``. Errors are the stdlib's (ConnectionRefusedError,
    TimeoutError after the SYN retries, OSError EADDRNOTAVAIL...). With
    ``ssl`` the stdlib's TLS runs over the connection, as in the stdlib:
    ``server_hostname`` defaults to ``host``, ``connection_made`` comes after
    the handshake."""
    if _ignored.get("sock") is not None:
        raise ValueError("sock= is a kernel socket: tcpstack cannot adopt it")
    if host is None or port is None:
        raise ValueError("host and port must be specified")
    ctx = _ssl_context(ssl, server_side=False)
    if ctx is None and server_hostname is not None:
        raise ValueError("server_hostname is only meaningful with ssl")
    if ctx is None and (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None):
        raise ValueError("ssl_handshake_timeout/ssl_shutdown_timeout are only meaningful with ssl")
    binding = get_stack(stack)
    loop = binding.loop
    remote = _ip(host)
    rport = _port(port)
    if rport == 0:
        raise OSError(errno.EADDRNOTAVAIL, "cannot connect to port 0")
    laddr = lport = None
    if local_addr is not None:
        laddr = _ip(local_addr[0], "local address") if local_addr[0] else None
        lport = _port(local_addr[1]) or None

    def setup(c: Connection) -> None:
        c.nodelay = True

    conn = binding.stack.connect(remote, rport, binding.now(), laddr, lport, setup=setup)
    binding.changed()
    settled = loop.create_future()

    def settle() -> None:
        if not settled.done() and conn.state not in (S.SYN_SENT, S.SYN_RECEIVED):
            settled.set_result(None)

    def waker(_c: Connection) -> None:
        loop.call_soon(settle)  # a waker only schedules

    conn.waker = waker
    try:
        await settled
    except BaseException:
        conn.waker = None
        if conn.state not in _GONE:
            conn.abort(binding.now())
            binding.changed()
        raise
    conn.waker = None
    if conn.error is not None:
        err = conn.error
        raise type(err)(*err.args)
    if not conn.established and not conn.eof:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"connect to {host}:{port} failed ({conn.state.value})"
        )
    protocol = protocol_factory()
    if ctx is None:
        transport = TcpTransport(binding, conn, protocol)
        transport._connection_made()
        return transport, protocol
    hostname = server_hostname if server_hostname is not None else host
    ssl_proto, handshake = _ssl_protocol(
        loop,
        protocol,
        ctx,
        server_side=False,
        server_hostname=hostname,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
    )
    transport = TcpTransport(binding, conn, ssl_proto)
    transport._connection_made()
    try:
        await handshake
    except BaseException:
        transport.close()
        raise
    return ssl_proto._app_transport, protocol  # type: ignore[attr-defined]


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    stack: Any = None,
    **kwds: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` on tcpstack: the stdlib's StreamReader and StreamWriter
    (same keywords as the stdlib's: ``ssl``, ``server_hostname``, ``local_addr``...)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, stack=stack, **kwds)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


# ---------------------------------------------------------------------------- serving


class ListenerSocket:
    """What ``Server.sockets`` holds: enough of a socket for ``getsockname()``."""

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, listener: Listener, family: int, addr: str) -> None:
        self.listener = listener
        self.family = family
        self._addr = addr

    def getsockname(self) -> tuple[Any, ...]:
        return _sockaddr(self._addr, self.listener.local_port)

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<tcpstack ListenerSocket {self.getsockname()}>"


class Server(asyncio.AbstractServer):
    """``asyncio.Server`` on tcpstack: listeners on one stack, a protocol per connection."""

    def __init__(
        self,
        binding: Binding,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        listeners: list[Listener],
        context: contextvars.Context,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        self._binding = binding
        self._ssl = ssl
        self._ssl_timeouts = (ssl_handshake_timeout, ssl_shutdown_timeout)
        self._loop = binding.loop
        self._factory = protocol_factory
        self._listeners = listeners
        self._context = context
        self._serving = False
        self._closed = False
        self._transports: set[TcpTransport] = set()
        self._accept_pending = False
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever_fut: asyncio.Future[None] | None = None
        self.sockets: tuple[ListenerSocket, ...] = self._make_sockets()
        for lst in listeners:
            lst.waker = self._waker

    def __repr__(self) -> str:
        return f"<tcpstack Server sockets={list(self.sockets)!r}>"

    def _make_sockets(self) -> tuple[ListenerSocket, ...]:
        out = []
        addrs = self._binding.stack.addresses
        for lst in self._listeners:
            if lst.local_addr:
                fam = socket.AF_INET6 if ":" in lst.local_addr else socket.AF_INET
                out.append(ListenerSocket(lst, fam, lst.local_addr))
            else:
                if any(":" not in a for a in addrs):
                    out.append(ListenerSocket(lst, socket.AF_INET, "0.0.0.0"))
                if any(":" in a for a in addrs):
                    out.append(ListenerSocket(lst, socket.AF_INET6, "::"))
        return tuple(out)

    # -- accepting -----------------------------------------------------------
    def _waker(self, _lst: Listener) -> None:
        if self._serving and not self._accept_pending:
            self._accept_pending = True
            self._loop.call_soon(self._accept)

    def _accept(self) -> None:
        self._accept_pending = False
        if not self._serving:
            return
        for lst in self._listeners:
            for _ in range(1024):  # bounded; the waker fires again for later ones
                conn = lst.accept() if lst.state is S.LISTEN else None
                if conn is None:
                    break
                try:
                    protocol = self._factory()
                except Exception as exc:
                    self._loop.call_exception_handler(
                        {
                            "message": "protocol factory failed",
                            "exception": exc,
                            "server": self,
                        }
                    )
                    conn.abort(self._binding.now())
                    self._binding.changed()
                    continue
                if self._ssl is not None:
                    # The stdlib's TLS between the transport and the protocol; the
                    # protocol's connection_made comes once the handshake is done.
                    protocol, handshake = _ssl_protocol(
                        self._loop,
                        protocol,
                        self._ssl,
                        server_side=True,
                        handshake_timeout=self._ssl_timeouts[0],
                        shutdown_timeout=self._ssl_timeouts[1],
                    )
                    handshake.add_done_callback(
                        _retrieve
                    )  # failures are the peer's, logged by SSLProtocol
                transport = TcpTransport(
                    self._binding, conn, protocol, server=self, context=self._context
                )
                self._loop.call_soon(transport._connection_made, context=self._context)

    def _attach(self, transport: TcpTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)
        self._maybe_wakeup()

    def _maybe_wakeup(self) -> None:
        if self._closed and not self._transports:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    # -- AbstractServer ------------------------------------------------------
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        if not self._serving:
            self._serving = True
            for lst in self._listeners:
                self._waker(lst)  # connections may already wait in the accept queue

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    def close(self) -> None:
        """Stop listening (not-yet-accepted connections are reset); accepted ones go on."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        now = self._binding.now()
        for lst in self._listeners:
            lst.waker = None
            lst.close(now)
        self._binding.changed()
        self.sockets = ()
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        self._maybe_wakeup()

    def close_clients(self) -> None:
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._transports):
            t.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection it accepted is gone
        (Python 3.12.1's semantics)."""
        if self._closed and not self._transports:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    @property
    def connections(self) -> list[TcpTransport]:
        """The transports of the connections this server accepted and that are still open."""
        return list(self._transports)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _free_port(stack: Stack) -> int:
    lo, hi = stack.config.ip_local_port_range
    span = hi - lo + 1
    start = stack.rng.randrange(span)
    used = {p for _, p in stack.listeners} | {k[1] for k in stack.conns}
    for i in range(span):
        port = lo + (start + i) % span
        if port not in used:
            return port
    raise OSError(errno.EADDRINUSE, f"no free port in ip_local_port_range {lo}-{hi}")


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | Iterable[str] | None = None,
    port: int | None = None,
    *,
    backlog: int = 100,
    reuse_address: bool | None = None,
    start_serving: bool = True,
    stack: Any = None,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    **_ignored: Any,
) -> Server:
    """``loop.create_server`` on tcpstack. ``host`` None, "", "0.0.0.0" or "::" listens
    on every address of the stack; port 0 or None picks a free port
    (``server.sockets[0].getsockname()``). ``ssl`` (an SSLContext with the
    certificate) serves TLS, the stdlib's."""
    ctx = _ssl_context(ssl, server_side=True)
    if ctx is None and (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None):
        raise ValueError("ssl_handshake_timeout/ssl_shutdown_timeout are only meaningful with ssl")
    if _ignored.get("sock") is not None:
        raise ValueError("sock= is a kernel socket: tcpstack cannot adopt it")
    binding = get_stack(stack)
    st = binding.stack
    if host is None or isinstance(host, str):
        hosts = [host or ""]
    else:
        hosts = list(host) or [""]
    addrs: list[str] = []
    for h in hosts:
        a = "" if h in ("", "0.0.0.0", "::") else _ip(h)
        if a not in addrs:
            addrs.append(a)
    if "" in addrs:
        addrs = [""]
    p = _port(port or 0)
    if p == 0:
        p = _free_port(st)
    now = binding.now()
    reuse = True if reuse_address is None else bool(reuse_address)
    listeners: list[Listener] = []
    try:
        for a in addrs:
            listeners.append(st.listen(p, now, addr=a, backlog=backlog, reuse=reuse))
    except BaseException:
        for lst in listeners:
            lst.close(now)
        raise
    context = contextvars.copy_context()
    context.run(_current.set, binding)
    server = Server(
        binding,
        protocol_factory,
        listeners,
        context,
        ssl=ctx,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    if start_serving:
        await server.start_serving()
        await asyncio.sleep(0)  # as the stdlib does: let the accept machinery start
    return server


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | Iterable[str] | None = None,
    port: int | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    stack: Any = None,
    **kwds: Any,
) -> Server:
    """``asyncio.start_server`` on tcpstack: ``client_connected_cb(reader, writer)``
    for each connection, with the stdlib's StreamReader and StreamWriter.
    With ``ssl`` (an SSLContext) the callback runs after the TLS handshake."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, stack=stack, **kwds)


# ---------------------------------------------------------------------------- event loops


class StackStreamsMixin:
    """``loop.create_connection`` / ``loop.create_server`` on tcpstack, so that the
    standard library's own ``asyncio.open_connection`` and ``asyncio.start_server``
    (which call them) run on tcpstack with no change to the application at all.
    The stack is the task's current one (:func:`use_stack`) or the loop's default
    (:func:`set_default_stack`). A kernel socket passed explicitly (``sock=``)
    still goes to the kernel, through the stdlib's implementation."""

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **kwds: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if kwds.get("sock") is not None:
            return await super().create_connection(protocol_factory, host, port, **kwds)  # type: ignore[misc, no-any-return]
        return await create_connection(protocol_factory, host, port, **kwds)

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **kwds: Any,
    ) -> asyncio.AbstractServer:
        if kwds.get("sock") is not None:
            return await super().create_server(protocol_factory, host, port, **kwds)  # type: ignore[misc, no-any-return]
        return await create_server(protocol_factory, host, port, **kwds)


class TcpstackEventLoop(StackStreamsMixin, asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """A real-time event loop whose TCP is tcpstack (drive it with an AioDriver)."""


class SimEventLoop(StackStreamsMixin, VirtualEventLoop):  # type: ignore[misc]
    """The virtual-time loop of :mod:`tcpstack.sim.vloop` whose TCP is tcpstack."""
