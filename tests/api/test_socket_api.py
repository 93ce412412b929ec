"""tcpstack.socket behaves as the standard socket module does, over a real-time
stack talking to itself (see conftest.py). Every blocking call has a timeout."""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import threading
import time

import pytest

import tcpstack.api.socket as api
from tcpstack import socket
from tcpstack.runtime.host import LoopbackHost
from tcpstack.tcp import State

from .conftest import ADDR4, ADDR6, T


def server(port: int = 0, family: int = socket.AF_INET) -> socket.socket:
    s = socket.create_server(("", port), family=family)
    s.settimeout(T)
    return s


def pair(srv: socket.socket, addr: str = ADDR4) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection((addr, srv.getsockname()[1]), timeout=T)
    a, _ = srv.accept()
    a.settimeout(T)
    return c, a


def wait_for(pred, timeout: float = T) -> bool:  # noqa: ANN001
    """Poll ``pred`` (bounded in time) for engine state that settles asynchronously."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def recv_all(s: socket.socket, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    while len(out) < limit:
        d = s.recv(1 << 16)
        if not d:
            break
        out += d
    return bytes(out)


# -- the module ---------------------------------------------------------------------


def test_tcpstack_socket_is_the_api_module() -> None:
    assert socket.socket is api.socket
    assert socket.create_connection is api.create_connection
    for name in api.__all__:
        assert getattr(socket, name) is getattr(api, name), name
    assert socket.timeout is TimeoutError and socket.error is OSError


def test_socket_without_a_stack_is_enetdown() -> None:
    prev = socket.set_default_driver(None)
    try:
        with pytest.raises(OSError) as exc:
            socket.socket()
        assert exc.value.errno == errno.ENETDOWN
    finally:
        socket.set_default_driver(prev)


def test_only_tcp() -> None:
    with pytest.raises(OSError) as exc:
        socket.socket(socket.AF_INET, 2)  # SOCK_DGRAM
    assert exc.value.errno == errno.EPROTONOSUPPORT


# -- data ------------------------------------------------------------------------------


def test_echo_one_mebibyte_sha256(host: LoopbackHost) -> None:
    srv = server()
    data = os.urandom(1 << 20)
    got: dict[str, bytes] = {}

    def echo() -> None:
        a, _ = srv.accept()
        a.settimeout(T)
        while True:
            d = a.recv(65536)
            if not d:
                break
            a.sendall(d)
        a.close()

    t = threading.Thread(target=echo)
    t.start()
    c = socket.create_connection((ADDR4, srv.getsockname()[1]), timeout=T)
    w = threading.Thread(target=lambda: (c.sendall(data), got.setdefault("sent", b"1")))
    w.start()
    back = bytearray()
    while len(back) < len(data):
        d = c.recv(1 << 20)
        assert d, "EOF before the whole echo"
        back += d
    w.join(T)
    c.shutdown(socket.SHUT_WR)
    assert c.recv(10) == b""
    t.join(T)
    c.close()
    srv.close()
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


def test_ipv6_echo_and_four_tuple_addresses(host: LoopbackHost) -> None:
    srv = server(family=socket.AF_INET6)
    port = srv.getsockname()[1]
    assert srv.getsockname() == ("::", port, 0, 0)
    c, a = pair(srv, ADDR6)
    assert c.getpeername() == (ADDR6, port, 0, 0)
    assert a.getsockname() == (ADDR6, port, 0, 0)
    assert a.getpeername() == c.getsockname()
    c.sendall(b"v6")
    assert a.recv(10) == b"v6"
    c.close()
    a.close()
    srv.close()


def test_recv_into_peek_waitall_dontwait(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    c.sendall(b"hello world")
    assert a.recv(5, socket.MSG_PEEK) == b"hello"
    assert a.recv(5, socket.MSG_PEEK) == b"hello"
    buf = bytearray(5)
    assert a.recv_into(buf) == 5 and buf == b"hello"
    assert a.recv(100, socket.MSG_WAITALL | socket.MSG_DONTWAIT) in (b" world", b" wor", b" w")
    with pytest.raises(BlockingIOError):
        while True:  # drain, then the queue is empty
            a.recv(100, socket.MSG_DONTWAIT)
    threading.Timer(0.05, lambda: c.sendall(b"abc")).start()
    threading.Timer(0.15, lambda: c.sendall(b"def")).start()
    assert a.recv(6, socket.MSG_WAITALL) == b"abcdef"
    for s in (c, a, srv):
        s.close()


def test_makefile_lines(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    wf = c.makefile("w", encoding="ascii", newline="\n")
    rf = a.makefile("r", encoding="ascii", newline="\n")
    wf.write("line one\nline two\n")
    wf.flush()
    assert rf.readline() == "line one\n"
    assert rf.readline() == "line two\n"
    wf.close()
    c.close()  # the real close happens now that no file object holds the socket
    assert rf.readline() == ""
    rf.close()
    a.close()
    srv.close()


def test_selector_multiplexes_twenty_clients(host: LoopbackHost) -> None:
    """A single-threaded echo server written against the selectors API."""
    srv = server()
    srv.setblocking(False)
    sel = socket.Selector()
    assert isinstance(sel, selectors.BaseSelector)
    sel.register(srv, selectors.EVENT_READ, "listener")
    n_clients = 20
    done = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + T
        open_conns = 0
        served = 0
        while served < n_clients and time.monotonic() < deadline:
            for key, _ev in sel.select(0.5):
                if key.data == "listener":
                    a, _ = srv.accept()
                    a.setblocking(False)
                    sel.register(a, selectors.EVENT_READ, "conn")
                    open_conns += 1
                    continue
                s = key.fileobj
                d = s.recv(4096)
                if d:
                    s.sendall(d.upper())
                else:
                    sel.unregister(s)
                    s.close()
                    served += 1
        done.set()

    t = threading.Thread(target=serve)
    t.start()
    clients = [socket.create_connection((ADDR4, srv.getsockname()[1]), timeout=T) for _ in range(n_clients)]
    for i, c in enumerate(clients):
        c.sendall(f"client {i}".encode())
    for i, c in enumerate(clients):
        assert c.recv(100) == f"CLIENT {i}".encode()
        c.close()
    assert done.wait(T)
    t.join(T)
    sel.close()
    srv.close()


# -- errors -------------------------------------------------------------------------------


def test_connect_to_closed_port_is_refused(host: LoopbackHost) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError) as exc:
        socket.create_connection((ADDR4, 9), timeout=T)
    assert exc.value.errno == errno.ECONNREFUSED
    assert time.monotonic() - t0 < 1.0  # a RST, not a timeout
    s = socket.socket()
    s.settimeout(T)
    assert s.connect_ex((ADDR4, 9)) == errno.ECONNREFUSED
    # A socket whose connect failed may connect again.
    srv = server()
    assert s.connect_ex((ADDR4, srv.getsockname()[1])) == 0
    s.close()
    srv.close()


def test_connect_timeout_when_nobody_answers(host: LoopbackHost) -> None:
    # 198.18.0.9 is not an address of this stack: the SYN is dropped, no answer.
    with pytest.raises(TimeoutError):
        socket.create_connection(("198.18.0.9", 80), timeout=0.3)
    s = socket.socket()
    s.settimeout(0.3)
    assert s.connect_ex(("198.18.0.9", 80)) == errno.ETIMEDOUT
    s.close()


def test_nonblocking_connect_and_so_error(host: LoopbackHost) -> None:
    srv = server()
    s = socket.socket()
    s.setblocking(False)
    assert s.connect_ex((ADDR4, srv.getsockname()[1])) == errno.EINPROGRESS
    sel = socket.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    assert sel.select(T), "connect did not complete"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert s.connect_ex((ADDR4, srv.getsockname()[1])) == errno.EISCONN
    sel.close()
    s.close()
    # Refused, non-blocking: writable, then SO_ERROR says why (once).
    r = socket.socket()
    r.setblocking(False)
    with pytest.raises(BlockingIOError):
        r.connect((ADDR4, 9))
    sel = socket.Selector()
    sel.register(r, selectors.EVENT_WRITE)
    assert sel.select(T)
    assert r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    assert r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    sel.close()
    r.close()
    srv.close()


def test_timeouts_and_nonblocking(host: LoopbackHost) -> None:
    srv = server()
    srv.settimeout(0.1)
    with pytest.raises(TimeoutError):
        srv.accept()
    srv.setblocking(False)
    with pytest.raises(BlockingIOError):
        srv.accept()
    srv.settimeout(T)
    c, a = pair(srv)
    a.settimeout(0.1)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        a.recv(10)
    assert 0.08 < time.monotonic() - t0 < 2.0
    a.setblocking(False)
    assert not a.getblocking() and a.gettimeout() == 0.0
    with pytest.raises(BlockingIOError) as exc:
        a.recv(10)
    assert exc.value.errno == errno.EAGAIN
    with pytest.raises(ValueError):
        a.settimeout(-1)
    for s in (c, a, srv):
        s.close()


def test_bind_errors_and_ports(host: LoopbackHost) -> None:
    srv = server(7000)
    s = socket.socket()
    with pytest.raises(OSError) as exc:
        s.bind(("", 7000))
    assert exc.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as exc:
        s.bind(("198.18.0.77", 7001))
    assert exc.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(socket.gaierror):
        s.bind(("localhost", 7001))
    s.bind((ADDR4, 0))
    lo, hi = host.stack.config.ip_local_port_range
    assert s.getsockname()[0] == ADDR4 and lo <= s.getsockname()[1] <= hi
    with pytest.raises(OSError) as exc:
        s.bind((ADDR4, 0))
    assert exc.value.errno == errno.EINVAL
    # Two sockets bound (not listening) to one port conflict without SO_REUSEADDR.
    b1, b2 = socket.socket(), socket.socket()
    b1.bind(("", 7100))
    with pytest.raises(OSError) as exc:
        b2.bind(("", 7100))
    assert exc.value.errno == errno.EADDRINUSE
    # listen() without bind picks a port.
    auto = socket.socket()
    auto.listen()
    assert auto.getsockname()[1] > 0
    for x in (s, b1, b2, auto, srv):
        x.close()
    # Closing released the ports.
    again = server(7000)
    again.close()


def test_operations_on_wrong_sockets(host: LoopbackHost) -> None:
    s = socket.socket()
    with pytest.raises(OSError) as exc:
        s.send(b"x")
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        s.getpeername()
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        s.accept()
    assert exc.value.errno == errno.EINVAL
    s.close()
    s.close()  # idempotent
    with pytest.raises(OSError) as exc:
        s.recv(1)
    assert exc.value.errno == errno.EBADF
    assert s.fileno() == -1


def test_send_after_shutdown_is_broken_pipe_and_half_close(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    c.sendall(b"request")
    c.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        c.send(b"more")
    assert recv_all(a) == b"request"  # then EOF
    assert a.connection.state is State.CLOSE_WAIT
    a.sendall(b"reply after EOF")
    assert c.recv(100) == b"reply after EOF"  # read before the peer's FIN arrives
    a.close()
    assert c.recv(100) == b""
    assert wait_for(lambda: a.connection.state is State.CLOSED)
    assert a.connection.history[-3:] == (State.CLOSE_WAIT, State.LAST_ACK, State.CLOSED)
    assert State.TIME_WAIT in c.connection.history
    c.close()
    srv.close()


def test_shutdown_rd_stops_blocking(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    a.shutdown(socket.SHUT_RD)
    assert a.recv(10) == b""
    for s in (c, a, srv):
        s.close()


def test_peer_reset_is_connection_reset_error(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 0))
    a.close()  # linger 0: RST
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    c.close()
    # Closing with unread data resets too (TCPAbortOnClose).
    c, a = pair(srv)
    c.sendall(b"unread")
    assert wait_for(lambda: a.connection.readable)
    a.close()
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    assert host.stack.mib.TCPAbortOnClose == 1
    c.close()
    srv.close()


def test_close_wakes_a_blocked_recv(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    errs: list[BaseException] = []

    def blocked() -> None:
        try:
            a.recv(10)
        except OSError as e:
            errs.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.1)
    a.close()
    t.join(T)
    assert not t.is_alive()
    assert errs and errs[0].errno == errno.EBADF
    c.close()
    srv.close()


def test_stopped_stack_fails_blocked_calls_with_enetdown() -> None:
    with LoopbackHost(seed=2) as h:
        srv = socket.create_server(("", 7000), driver=h)
        srv.settimeout(T)
        errs: list[BaseException] = []

        def blocked() -> None:
            try:
                srv.accept()
            except OSError as e:
                errs.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.1)
        h.driver.stop()
        t.join(T)
        assert errs and errs[0].errno == errno.ENETDOWN
        srv.close()  # no error: the stack is gone


# -- options ------------------------------------------------------------------------------


def test_socket_options(host: LoopbackHost) -> None:
    srv = server()
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c, a = pair(srv)
    assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # inherited
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert c.connection.nodelay

    # TCP_CORK holds partial segments until uncorked, TCP_NODELAY or not.
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1 and c.connection.cork
    c.sendall(b"x" * 100)
    c.sendall(b"y" * 100)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    got = b""
    while len(got) < 200:
        got += a.recv(200)
    assert got == b"x" * 100 + b"y" * 100 and not c.connection.cork

    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    assert c.connection.config.tcp_keepalive_probes == 3
    assert host.stack.config.tcp_keepalive_time == 7200  # per connection only
    assert c.connection.keepalive_at is not None

    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 65536
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 32768

    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 5))
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == (1, 5)
    import struct

    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == (0, 0)

    assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1  # create_server sets it
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 1460 - 12  # timestamps on

    with pytest.raises(OSError) as exc:
        c.setsockopt(socket.SOL_SOCKET, 0x7777, 1)
    assert exc.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as exc:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0)
    assert exc.value.errno == errno.EINVAL

    c.sendall(b"x" * 5000)
    assert a.recv(5000, socket.MSG_WAITALL) == b"x" * 5000
    info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO)
    assert info["state"] == "ESTABLISHED"
    assert info["bytes_acked"] <= 5200 and info["snd_mss"] > 0  # with the 200 corked bytes
    assert "wscale" in info["options"] and "sack" in info["options"]
    for s in (c, a, srv):
        s.close()


def test_so_reuseaddr_with_time_wait(host: LoopbackHost) -> None:
    srv = server(7200)
    c, a = pair(srv)
    a.close()  # the server side closes first: TIME-WAIT lands on 198.18.0.2:7200
    assert c.recv(10) == b""
    c.close()
    srv.close()
    assert wait_for(lambda: any(k[1] == 7200 for k in host.stack.timewait))
    plain = socket.socket()
    with pytest.raises(OSError) as exc:
        plain.bind(("", 7200))
    assert exc.value.errno == errno.EADDRINUSE
    plain.close()
    reuse = socket.socket()
    reuse.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reuse.bind(("", 7200))
    reuse.listen()
    reuse.close()


def test_linger_close_waits_for_the_ack(host: LoopbackHost) -> None:
    srv = server()
    c, a = pair(srv)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 5))
    c.sendall(b"y" * 200_000)
    conn = c.connection
    reader = threading.Thread(target=lambda: recv_all(a))
    reader.start()
    c.close()
    assert conn.state in (State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED)
    assert conn.snd_una == conn.snd_nxt
    reader.join(T)
    a.close()
    srv.close()


def test_getaddrinfo_numeric_only() -> None:
    assert socket.getaddrinfo("198.18.0.1", 80) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("198.18.0.1", 80))
    ]
    assert socket.getaddrinfo("fd00::1", "81")[0][4] == ("fd00::1", 81, 0, 0)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 80)


def test_unclosed_socket_is_closed_when_collected(host: LoopbackHost) -> None:
    import gc
    import warnings

    srv = server()
    c, a = pair(srv)
    peer_conn = a.connection
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del c
        gc.collect()
    assert any(issubclass(x.category, ResourceWarning) for x in w)
    # The FIN arrives: the peer reads EOF.
    assert a.recv(10) == b""
    assert peer_conn.state is State.CLOSE_WAIT
    a.close()
    srv.close()


def check_ipv4_only(c: socket.socket, ipv4_opt: int, ipv6_opt: int, not_an_int: object) -> None:
    """On IPv4 socket ``c``: the IPv6 twin of an option is ENOPROTOOPT to set and
    EOPNOTSUPP to read (as Linux answers both), a non-integer a TypeError."""
    with pytest.raises(OSError) as info:
        c.setsockopt(socket.IPPROTO_IPV6, ipv6_opt, 5)
    assert info.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as info:
        c.getsockopt(socket.IPPROTO_IPV6, ipv6_opt)
    assert info.value.errno == errno.EOPNOTSUPP
    with pytest.raises(TypeError):
        c.setsockopt(socket.IPPROTO_IP, ipv4_opt, not_an_int)


def check_ipv6_octet_option(opt: int, default: int, settings: list[tuple[int, int]]) -> None:
    """On a fresh IPv6 socket, the IPPROTO_IPV6 option ``opt`` reads ``default``, then
    each value set reads back as given; 256 does not fit its octet (EINVAL)."""
    s6 = socket.socket(socket.AF_INET6)
    assert s6.getsockopt(socket.IPPROTO_IPV6, opt) == default
    for value, want in settings:
        s6.setsockopt(socket.IPPROTO_IPV6, opt, value)
        assert s6.getsockopt(socket.IPPROTO_IPV6, opt) == want, value
    with pytest.raises(OSError) as info:
        s6.setsockopt(socket.IPPROTO_IPV6, opt, 256)
    assert info.value.errno == errno.EINVAL
    s6.close()


def test_ip_tos_and_ipv6_tclass(host: LoopbackHost) -> None:
    # RFC 9293 MUST-48/SHLD-21: the application sets the Diffserv field, also mid-connection.
    srv = server()
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
    c, a = pair(srv)
    assert a.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0x28  # inherited from the listener
    assert a.connection.tos == 0x28 and c.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0
    c.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xBB)  # Linux clears the ECN bits for TCP
    assert c.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8 and c.connection.tos == 0xB8
    c.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x1B4)  # the kernel keeps the low 8 bits
    assert c.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB4
    check_ipv4_only(c, socket.IP_TOS, socket.IPV6_TCLASS, 1.5)
    for s in (c, a, srv):
        s.close()
    # RFC 3542 §6.5: -1 is the default; the ECN bits are cleared here too.
    check_ipv6_octet_option(socket.IPV6_TCLASS, 0, [(-1, 0), (0xB9, 0xB8)])


def test_ip_ttl_and_ipv6_unicast_hops(host: LoopbackHost) -> None:
    # RFC 9293 MUST-49: the application sets the TTL; Linux's ranges and -1 = the tunable.
    srv = server()
    assert srv.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64  # ip_default_ttl
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 17)
    c, a = pair(srv)
    assert a.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 17 and a.connection.ttl == 17  # inherited
    assert c.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64 and c.connection.ttl == 64
    c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    assert c.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255 and c.connection.ttl == 255
    c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, -1)  # back to the tunable, read back as its value
    assert c.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64 and c.connection.ttl == 64
    for bad in (0, 256, -2):
        with pytest.raises(OSError) as info:
            c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, bad)
        assert info.value.errno == errno.EINVAL and "IP_TTL" in str(info.value)
    check_ipv4_only(c, socket.IP_TTL, socket.IPV6_UNICAST_HOPS, "5")
    c.sendall(b"ping")
    assert a.recv(4) == b"ping"
    for s in (c, a, srv):
        s.close()
    # The default is hop_limit (64); Linux allows 0 on IPv6, and -1 is the tunable again.
    check_ipv6_octet_option(socket.IPV6_UNICAST_HOPS, 64, [(0, 0), (-1, 64)])


def test_urgent_data_sockatmark_select_and_selector(host: LoopbackHost) -> None:
    # RFC 9293 MUST-32/33: the application learns of urgent data (exceptional
    # condition) and where it ends (sockatmark); the data itself is inline (RFC 6093).
    srv = server()
    c, a = pair(srv)
    assert not a.sockatmark() and a.urgent_offset() is None
    assert socket.select([], [], [a], 0) == ([], [], [])
    c.sendall(b"hello")
    c.send(b"!", socket.MSG_OOB)
    c.sendall(b"after")
    assert socket.select([], [], [a], T) == ([], [], [a])  # blocks until the urgent byte is in
    assert wait_for(lambda: a.urgent_offset() == 5 and a.connection.recvbuf.ready == 11)
    assert socket.select([a, c], [c], [a, c], 0) == ([a], [c], [a])
    assert a.recv(100) == b"hello"  # stops just before the mark, as Linux
    assert a.sockatmark() and a.urgent_offset() == 0
    sel = socket.DefaultSelector()
    sel.register(a, selectors.EVENT_READ | socket.EVENT_URGENT)
    [(key, ev)] = sel.select(0)
    assert key.fileobj is a and ev == selectors.EVENT_READ | socket.EVENT_URGENT
    assert a.recv(100) == b"!after"  # from the mark on
    assert not a.sockatmark() and a.urgent_offset() is None
    assert sel.select(0) == []
    sel.close()
    with pytest.raises(OSError) as info:
        a.recv(1, socket.MSG_OOB)
    assert info.value.errno == errno.EINVAL and "sockatmark" in str(info.value)
    with pytest.raises(OSError) as info:
        srv.sockatmark()
    assert info.value.errno == errno.EINVAL
    # MSG_WAITALL stops at the mark too; a peek does not move it.
    c.sendall(b"12")
    c.send(b"3", socket.MSG_OOB)
    assert wait_for(lambda: a.connection.recvbuf.ready == 3)
    assert a.recv(2, socket.MSG_PEEK) == b"12" and not a.sockatmark() and a.urgent_offset() == 2
    assert a.recv(10, socket.MSG_WAITALL) == b"12" and a.sockatmark()
    for s in (c, a, srv):
        s.close()


def test_select_refuses_a_closed_socket_and_a_negative_timeout(host: LoopbackHost) -> None:
    # As select.select: a closed socket (fileno() -1) and a negative timeout are
    # ValueError -- not a closed socket reported readable, nor a poll.
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        socket.select([s], [], [], 0)
    s2 = socket.socket()
    with pytest.raises(ValueError, match="non-negative"):
        socket.select([s2], [], [], -1)
    s2.close()
