"""The real-time driver's extras: netem-like impairment and the loopback device."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
from typing import Any

import pytest

from tcpstack import socket
from tcpstack.pcap import PcapWriter
from tcpstack.runtime.driver import Impairment, LoopbackDevice
from tcpstack.runtime.host import LoopbackHost
from tcpstack.wire import parse_ip_tcp

from .conftest import ADDR4, T


def test_impairment_loss_and_duplicate_rates_are_deterministic() -> None:
    def run(seed: int) -> tuple[int, int, int]:
        imp = Impairment(loss=0.03, duplicate=0.01, seed=seed)
        out = imp.apply([bytes([i % 256]) for i in range(100_000)], 0)
        return len(out), imp.dropped, imp.duplicated

    n, dropped, dup = run(7)
    assert run(7) == (n, dropped, dup)
    assert 2700 < dropped < 3300
    assert 800 < dup < 1200
    assert n == 100_000 - dropped + dup


def test_impairment_delay_and_reorder() -> None:
    imp = Impairment(delay_ms=20, reorder=0.25, seed=3)
    now = 1_000_000
    pkts = [i.to_bytes(4, "big") for i in range(1000)]
    immediate = imp.apply(pkts, now)
    assert 180 < len(immediate) < 320 and imp.reordered == len(immediate)
    assert imp.next_release() == now + 20_000
    assert imp.release(now + 19_999) == []
    held = imp.release(now + 20_000)
    assert len(held) + len(immediate) == 1000
    assert held == sorted(held)  # the delayed ones keep their order
    assert imp.next_release() is None


def test_impairment_draws_in_netem_order() -> None:
    """netem_enqueue: duplication, then loss; a loss takes one copy away; the clone
    re-enters with its own loss draw (certain outcomes, so exact counts)."""
    pkts = [bytes([i]) for i in range(50)]
    both = Impairment(loss=1.0, duplicate=1.0, seed=1)  # duplicated and lost: goes out once
    assert both.apply(pkts, 0) == pkts
    assert (both.dropped, both.duplicated) == (0, 0)
    lost = Impairment(loss=1.0, seed=1)
    assert lost.apply(pkts, 0) == [] and lost.dropped == 50
    dup = Impairment(duplicate=1.0, seed=1)
    assert dup.apply(pkts, 0) == [p for p in pkts for _ in (0, 1)] and dup.duplicated == 50
    # Clones lost on their own pass: out = packets - dropped + duplicated.
    imp = Impairment(loss=0.5, duplicate=1.0, seed=4)
    out = imp.apply([bytes([i % 256]) for i in range(10_000)], 0)
    assert len(out) == 10_000 - imp.dropped + imp.duplicated
    assert 4700 < imp.duplicated < 5300  # duplicated and not lost: p = 1/2
    assert 2200 < imp.dropped < 2800  # only clones can be lost here: 1/2 of the 1/2


def test_impairment_reorder_needs_a_delay_as_in_tc() -> None:
    with pytest.raises(ValueError, match="reordering needs a delay"):
        Impairment(reorder=0.05)
    imp = Impairment(delay_ms=20, reorder=1.0, duplicate=1.0, seed=2)  # every copy goes out at once
    assert imp.apply([b"a", b"b"], 0) == [b"a", b"a", b"b", b"b"]
    assert imp.reordered == 4 and imp.next_release() is None


def test_impairment_jitter_is_uniform_around_the_delay() -> None:
    imp = Impairment(delay_ms=20, jitter_ms=5, seed=9)
    now = 1_000_000
    assert imp.apply([i.to_bytes(4, "big") for i in range(2000)], now) == []
    times = sorted(t - now for t, _, _ in imp._held)
    assert 15_000 <= times[0] < 15_100 and 24_900 < times[-1] <= 25_000
    assert 19_500 < times[1000] < 20_500  # the median sits at the delay
    assert len(imp.release(now + 25_000)) == 2000


def test_loopback_device_roundtrip() -> None:
    dev = LoopbackDevice()
    try:
        assert dev.read_batch() == []
        assert dev.write_batch([b"a", b"b", b"c"]) == 3
        assert os.read(dev.fileno(), 10)  # readable: signalled through the pipe
        os.write(dev._w, b"\0")  # put the signal back for read_batch to drain
        assert dev.read_batch(2) == [b"a", b"b"]
        assert dev.read_batch(2) == [b"c"]
    finally:
        dev.close()


def test_transfer_through_impaired_loopback_is_intact() -> None:
    """3% loss, 1% duplication, 5% reordering, 5 ms delay on every packet: the
    bytes still arrive exactly (both directions cross the impaired egress)."""
    imp = Impairment(loss=0.03, delay_ms=5, reorder=0.05, duplicate=0.01, seed=11)
    data = os.urandom(512 * 1024)
    with LoopbackHost(seed=5, egress=imp) as h:
        srv = socket.create_server(("", 7000), driver=h)
        srv.settimeout(T)
        got: list[bytes] = []

        def sink() -> None:
            a, _ = srv.accept()
            a.settimeout(T)
            buf = bytearray()
            while True:
                d = a.recv(65536)
                if not d:
                    break
                buf += d
            got.append(bytes(buf))
            a.close()

        t = threading.Thread(target=sink)
        t.start()
        c = socket.create_connection((ADDR4, 7000), timeout=T, driver=h)
        c.sendall(data)
        c.close()
        t.join(3 * T)
        srv.close()
        assert got and hashlib.sha256(got[0]).digest() == hashlib.sha256(data).digest()
        assert imp.dropped > 0 and imp.duplicated > 0 and imp.reordered > 0
        assert h.stack.mib.RetransSegs > 0


def test_offload_checksum_completion() -> None:
    """A NEEDS_CSUM frame (the field holds the pseudo-header sum, Linux's
    CHECKSUM_PARTIAL) comes out with the checksum a full computation gives."""
    from tcpstack.runtime.driver import _complete_checksum
    from tcpstack.runtime.tun import VnetHdr
    from tcpstack.wire.checksum import pseudo_header_sum
    from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
    from tcpstack.wire.tcp import ACK, Segment

    for src, dst, ihl in (("198.18.0.1", "198.18.0.2", 20), ("fd00:198:18::1", "fd00:198:18::2", 40)):
        whole = build_ip_tcp(src, dst, Segment(9000, 40000, 1, 2, ACK, 512, 0, (), os.urandom(30001)))
        partial = bytearray(whole)
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        psum = pseudo_header_sum(socket.inet_pton(fam, src), socket.inet_pton(fam, dst), 6, len(whole) - ihl)
        partial[ihl + 16: ihl + 18] = psum.to_bytes(2, "big")
        assert bytes(partial) != whole
        done = _complete_checksum(VnetHdr.tcp_csum(ihl), memoryview(bytes(partial)))
        assert bytes(done) == whole
        parse_ip_tcp(done)  # verifies
        plain = memoryview(whole)
        assert _complete_checksum(VnetHdr(), plain) is plain  # nothing to do without NEEDS_CSUM


# ---------------------------------------------------------------- direct processing
def test_call_reads_the_device_the_loop_left_to_it() -> None:
    """The loop thread leaves a device wake-up to a thread inside call() by setting
    _backlog; call() then runs the engine on the device on its way out (as Linux's
    release_sock). Driven by hand: no loop thread, one SYN to a closed port."""
    from tcpstack.runtime.driver import Driver
    from tcpstack.tcp import Stack
    from tcpstack.wire import SYN, Segment, build_ip_tcp, parse_ip_tcp

    dev = LoopbackDevice()
    stack = Stack([ADDR4], seed=1)
    d = Driver(stack, dev)  # not started
    try:
        dev.write(build_ip_tcp("198.18.0.9", ADDR4, Segment(40000, 9, 1000, 0, SYN, 512)))
        assert d.call(lambda now: stack.mib.InSegs) == 0  # no backlog flagged: nothing read
        d._backlog = True
        assert d.call(lambda now: stack.mib.InSegs) == 0  # fn runs first, the backlog after it
        assert stack.mib.InSegs == 1 and not d._backlog
        _, _, rst = parse_ip_tcp(dev.read_batch()[0])  # the answer went out at once
        assert rst.ack == 1001 and rst.dst_port == 40000
    finally:
        d.stop()
        dev.close()


def test_close_wakes_a_thread_waiting_on_the_device() -> None:
    """A thread blocked in accept() waits on the device itself (direct processing);
    closing the listener from another thread moves no packet, yet must wake it."""
    import errno
    import time

    with LoopbackHost(seed=3) as h:
        srv = socket.create_server(("", 7001), driver=h)
        srv.settimeout(3 * T)  # longer than the join below: only a wake-up ends it in time
        errs: list[OSError] = []

        def acceptor() -> None:
            try:
                srv.accept()
            except OSError as e:
                errs.append(e)

        t = threading.Thread(target=acceptor, daemon=True)
        t.start()
        for _ in range(2000):  # until the acceptor waits as the poller (bounded)
            if h.driver._poller is not None:
                break
            time.sleep(0.001)
        assert h.driver._poller is not None
        srv.close()
        t.join(T)
        assert not t.is_alive()
        assert len(errs) == 1 and errs[0].errno == errno.EBADF, errs


def _ping_pong(direct: bool, count: int) -> tuple[int, Any]:
    with LoopbackHost(seed=4, direct=direct) as h:
        srv = socket.create_server(("", 7002), driver=h)
        srv.settimeout(T)
        echoed = [0]

        def echo() -> None:
            a, _ = srv.accept()
            a.settimeout(T)
            a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while d := a.recv(100):
                a.sendall(d)
                echoed[0] += 1
            a.close()

        t = threading.Thread(target=echo)
        t.start()
        c = socket.create_connection((ADDR4, 7002), timeout=T, driver=h)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ok = 0
        for i in range(count):
            b = bytes([i & 0xFF])
            c.sendall(b)
            ok += c.recv(1) == b
        c.close()
        t.join(T)
        srv.close()
        return ok, h.driver


def test_round_trips_with_and_without_direct_processing() -> None:
    """The same 1-byte ping-pong between two threads, engine work done by the waiting
    threads (direct) or by the loop thread alone: every byte comes back either way."""
    ok, d = _ping_pong(True, 300)
    assert ok == 300
    ok, d = _ping_pong(False, 300)
    assert ok == 300 and d.direct_polls == 0 and d.skips == 0


def test_device_read_on_leaving_wait_wakes_the_loop_for_new_timers() -> None:
    """A user thread that reads the device for the loop (here: on leaving wait())
    may arm a timer earlier than the loop's sleep: it must wake the loop to re-arm.
    A SYN to a listener arms the SYN-ACK retransmission; the loop sleeps with no
    deadline at all."""
    from tcpstack.runtime.driver import Driver
    from tcpstack.tcp import Stack
    from tcpstack.wire import SYN, Segment, build_ip_tcp

    dev = LoopbackDevice()
    stack = Stack([ADDR4], seed=1)
    d = Driver(stack, dev)  # not started: its state is set by hand
    try:
        d.call(lambda now: stack.listen(9, now))
        assert stack.next_deadline() is None
        d._sleeping, d._sleep_until = True, None  # as the loop, asleep without a deadline
        dev.write(build_ip_tcp("198.18.0.9", ADDR4, Segment(40000, 9, 1000, 0, SYN, 512)))
        d._backlog = True
        assert d.wait(lambda: False, 0) is False
        assert stack.mib.InSegs == 1 and stack.next_deadline() is not None
        assert os.read(d._wake_r, 16)  # poked
    finally:
        d.stop()
        dev.close()


# ---------------------------------------------------------------- signals in a user thread
class _SigintFile(io.BytesIO):
    """A capture file where Ctrl-C lands: once armed, the next packet recorded
    raises SIGINT, whose default handler raises KeyboardInterrupt in the main
    thread right there -- inside the driver, as a real Ctrl-C can."""

    armed = False

    def write(self, b: Any) -> int:
        if self.armed and len(b) > 16:  # a packet, not its record header
            self.armed = False
            signal.raise_signal(signal.SIGINT)
        return super().write(b)


@pytest.fixture
def sigint_raises() -> Any:
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev)


def _syn_to_closed_port() -> bytes:
    from tcpstack.wire import SYN, Segment, build_ip_tcp

    return build_ip_tcp("198.18.0.9", ADDR4, Segment(40000, 9, 1000, 0, SYN, 512))


def test_interrupt_while_call_flushes_leaves_the_stack(sigint_raises: None) -> None:
    """Ctrl-C while call() writes its output (main thread): the thread has left the
    stack, so (1) a device wake-up the loop then leaves to threads inside the stack
    (_backlog) is still taken by the next call() on its way out -- not left to a
    thread that is gone, which would stop the loop reading the device for good --
    and (2) the loop learns of the timer fn armed (the SYN's retransmission: the
    interrupted SYN never reached the device). Driven by hand: no loop thread."""
    from tcpstack.runtime.driver import Driver
    from tcpstack.tcp import Stack

    dev = LoopbackDevice()
    stack = Stack([ADDR4], seed=1)
    f = _SigintFile()
    d = Driver(stack, dev, pcap=PcapWriter(f))  # not started
    try:
        d._sleeping, d._sleep_until = True, None  # as the loop, asleep without a deadline
        f.armed = True
        with pytest.raises(KeyboardInterrupt):
            d.call(lambda now: stack.connect("198.18.0.9", 9, now))
        assert dev.tx_packets == 0 and stack.next_deadline() is not None
        assert os.read(d._wake_r, 16)  # (2) poked: the loop re-arms for the SYN's RTO
        dev.write(_syn_to_closed_port())
        d._backlog = True  # as the loop does when woken while threads are inside
        d.call(lambda now: None)
        assert stack.mib.InSegs == 1 and not d._backlog  # (1) taken on the way out
    finally:
        d.stop()
        dev.close()


def test_interrupt_during_direct_processing_stays_a_keyboard_interrupt(sigint_raises: None) -> None:
    """Ctrl-C while the main thread, waiting in recv()/accept(), runs the engine on
    what it read (direct processing): the caller gets the KeyboardInterrupt itself,
    not OSError(ENETDOWN) (which `except OSError` code would swallow), and a
    Ctrl-C is not the engine failing: the stack stays up for every thread, as
    when the interrupt lands in call(). Driven by hand: no loop thread."""
    from tcpstack.runtime.driver import Driver
    from tcpstack.tcp import Stack

    dev = LoopbackDevice()
    stack = Stack([ADDR4], seed=1)
    f = _SigintFile()
    d = Driver(stack, dev, pcap=PcapWriter(f))  # not started
    try:
        dev.write(_syn_to_closed_port())
        f.armed = True  # the SYN is recorded as it is handed to the engine
        with pytest.raises(KeyboardInterrupt):
            d.wait(lambda: False, T)  # the main thread is the poller: the SYN wakes it at once
        assert d.running and d.error is None
        assert d._busy == 0 and d._poller is None
        dev.write(_syn_to_closed_port())  # the interrupted one was read, never processed
        d._backlog = True
        d.call(lambda now: None)
        assert stack.mib.InSegs == 1
        _, _, rst = parse_ip_tcp(dev.read_batch()[0])
        assert rst.ack == 1001 and rst.dst_port == 40000
    finally:
        d.stop()
        dev.close()


def _syscall(tid: int) -> str:
    """The syscall thread ``tid`` is blocked in (its number), or "running"."""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0]


def test_interrupt_as_the_poller_retakes_the_lock_leaves_no_poller(sigint_raises: None) -> None:
    """Ctrl-C that arrives while the poller, woken, waits to retake the driver's
    lock: the KeyboardInterrupt is raised as soon as it has the lock. The thread
    is then no longer the poller -- else the loop would go on leaving every
    device wake-up to it (it skips them while a poller is set) and nobody would
    read the device again -- and what it did not read is left to the loop.
    Driven by hand: the main thread polls, a helper holds the lock across the
    wake-up and sends SIGINT once the main thread is blocked on the lock."""
    from tcpstack.runtime.driver import Driver
    from tcpstack.tcp import Stack

    dev = LoopbackDevice()
    stack = Stack([ADDR4], seed=1)
    d = Driver(stack, dev)  # not started
    main, tid = threading.get_ident(), threading.get_native_id()
    steps: list[str] = []

    def helper() -> None:
        for _ in range(10_000):  # until the main thread waits in the poller's epoll (bounded)
            if d._poller == main and _syscall(tid) != "running":
                break
            threading.Event().wait(0.001)
        in_epoll = _syscall(tid)
        with d.lock:
            d.notify()  # the poller wakes, then blocks retaking the lock
            for _ in range(10_000):
                s = _syscall(tid)
                if s not in (in_epoll, "running"):
                    break
                threading.Event().wait(0.001)
            steps.append(s)
            signal.pthread_kill(main, signal.SIGINT)

    h = threading.Thread(target=helper)
    try:
        h.start()
        with pytest.raises(KeyboardInterrupt):
            d.wait(lambda: False, T)
        h.join(T)
        assert steps and steps[0] != "running"  # the signal came while it waited for the lock
        assert d._poller is None and d._busy == 0
        assert d._more  # what the wake-up may have meant is the loop's
    finally:
        h.join(T)
        d.stop()
        dev.close()
