"""A misbehaving peer is never an exception: random segments, in any state,
become drops, RSTs or (challenge) ACKs, with the stack still consistent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpstack.tcp import State
from tcpstack.wire.ip import build_ip_tcp
from tcpstack.wire.tcp import Opt, Segment

from .conftest import IRS, ISS, LOCAL, LPORT, REMOTE, RPORT, Peer, established_client, make_stack

U32 = st.integers(0, 2**32 - 1)
near = lambda base: st.integers(base - 70_000, base + 70_000).map(lambda x: x & 0xFFFFFFFF)  # noqa: E731
options = st.lists(
    st.one_of(
        st.just(Opt(1, None)),
        st.builds(lambda m: Opt(2, m), st.integers(0, 65535)),
        st.builds(lambda w: Opt(3, w), st.integers(0, 255)),
        st.just(Opt(4, None)),
        st.builds(lambda a, b: Opt(8, (a, b)), U32, U32),
        st.builds(lambda bl: Opt(5, tuple(bl)), st.lists(st.tuples(near(ISS), near(ISS)), min_size=1, max_size=3)),
    ),
    max_size=4,
).map(tuple)
def segments_with(opts: st.SearchStrategy[tuple[Opt, ...]]) -> st.SearchStrategy[Segment]:
    """Segments from the peer, sequence numbers near the connection's or anywhere."""
    return st.builds(
        lambda seq_, ack, flags, win, urg, o, payload: Segment(RPORT, LPORT, seq_, ack, flags, win, urg, o, payload),
        st.one_of(near(IRS), U32),
        st.one_of(near(ISS), U32),
        st.integers(0, 0x1FF),
        st.integers(0, 65535),
        st.integers(0, 65535),
        opts,
        st.binary(max_size=3000),
    )


segments = segments_with(options)


def _fits(seg: Segment) -> bool:
    try:
        build_ip_tcp(REMOTE, LOCAL, seg)
    except ValueError:
        return False
    return True


@settings(max_examples=int(__import__("os").environ.get("TCPSTACK_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segments.filter(_fits), min_size=1, max_size=25), st.sampled_from(["client", "listen", "closing"]))
def test_random_segments_never_raise(segs, setup):
    stack = make_stack()
    peer = Peer(stack)
    conn = None
    if setup == "listen":
        stack.listen(LPORT, 0)
    else:
        conn = established_client(stack, peer)
        conn.send(b"x" * 5000, 2000)
        if setup == "closing":
            conn.close(2001)
        peer.recv()
    t = 3000
    for s in segs:
        t += 1000
        peer.send(t, s)  # must not raise
        stack.poll(t)
        stack.transmit()
    # Timers keep working and the stack stays consistent afterwards.
    for _ in range(50):
        d = stack.next_deadline()
        if d is None:
            break
        t = max(t, d)
        stack.poll(t)
        stack.transmit()
    for c in stack.conns.values():
        assert c.state in State
        assert c.state is not State.CLOSED
    if conn is not None:
        assert conn.state in State


# ---------------------------------------------------------------- SACK, timestamps, ECN, ICMP, batches
# The same promise with everything the plain-config test leaves out: SACK blocks,
# timestamps and window scaling agreed, ECN agreed (ECE/CWR flags, and ECT/CE in
# the IP header), ICMP errors quoting our segments (path MTU, unreachables),
# device batches (Stack.receive_batch), and the application's calls in between.
TS_BASE = 1_000_000
FULL_SYN = (Opt(2, 1460), Opt(4, None), Opt(8, (TS_BASE, 0)), Opt(1, None), Opt(3, 7))
ts_opt = st.builds(lambda v, e: Opt(8, (v, e)), st.one_of(st.integers(TS_BASE - 10, TS_BASE + 10_000), U32), U32)
full_options = st.lists(
    st.one_of(
        ts_opt, ts_opt,  # mostly with a timestamp, so that PAWS lets segments in
        st.just(Opt(1, None)),
        st.builds(lambda bl: Opt(5, tuple(bl)), st.lists(st.tuples(near(ISS), near(ISS)), min_size=1, max_size=3)),
    ),
    max_size=3,
).map(tuple)
full_segments = segments_with(full_options).filter(_fits)
# ICMPv4: destination unreachable (every code, 4 = fragmentation needed with an
# MTU), source quench, redirect, time exceeded, parameter problem, and nonsense.
icmp_errors = st.tuples(
    st.sampled_from([3, 3, 3, 4, 5, 11, 12, 0, 8]), st.integers(0, 16), st.one_of(near(ISS), U32),
    st.integers(0, 2000),
)
events = st.one_of(
    st.tuples(st.just("seg"), full_segments, st.integers(0, 3)),
    st.tuples(st.just("batch"), st.lists(st.tuples(full_segments, st.integers(0, 3)), min_size=1, max_size=6)),
    st.tuples(st.just("icmp"), icmp_errors),
    st.tuples(st.just("user"), st.sampled_from(["send", "urgent", "recv", "shutdown", "close", "abort",
                                                "cork", "uncork", "nodelay"])),
    st.tuples(st.just("tick"), st.integers(0, 400_000)),
)


def _icmp(mtype: int, code: int, quoted_seq: int, mtu: int) -> bytes:
    from tcpstack.wire.icmp import build_icmp_error

    ours = build_ip_tcp(LOCAL, REMOTE, Segment(LPORT, RPORT, quoted_seq, 0, 0x10, 0))[:28]
    return build_icmp_error("198.18.0.9", LOCAL, mtype, code, ours, info=mtu if (mtype, code) == (3, 4) else 0)


def _user(conn, op: str, now: int) -> None:
    try:
        if op == "send":
            conn.send(b"u" * 2000, now)
        elif op == "urgent":
            conn.send(b"!", now, urgent=True)
        elif op == "recv":
            conn.recv(4096, now)
        elif op == "shutdown":
            conn.shutdown(now)
        elif op == "close":
            conn.close(now)
        elif op == "abort":
            conn.abort(now)
        elif op in ("cork", "uncork"):
            conn.set_cork(op == "cork", now)
        else:
            conn.set_nodelay(True, now)
    except OSError:
        pass  # misuse after a reset or a close: the documented exception, not a crash


@settings(max_examples=int(__import__("os").environ.get("TCPSTACK_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(events, min_size=1, max_size=30), st.sampled_from(["cubic", "newreno"]))
def test_random_events_with_sack_timestamps_ecn_icmp_and_batches_never_raise(evs, cc):
    from tcpstack.tcp import Config
    from tcpstack.tcp.sack import NO_SACKS
    from tcpstack.wire.tcp import ACK, ECE, SYN

    stack = make_stack(Config(tcp_ecn=1, tcp_congestion_control=cc))
    peer = Peer(stack)
    conn = stack.connect(REMOTE, RPORT, 0, local_port=LPORT)
    peer.recv()
    synack = Segment(RPORT, LPORT, IRS, ISS + 1, SYN | ACK | ECE, 65535, 0, FULL_SYN)
    peer.send(10_000, synack)
    assert conn.state is State.ESTABLISHED and conn.sack_ok and conn.ts_ok and conn.ecn_ok
    conn.send(b"x" * 20_000, 10_000)
    peer.recv()
    t = 20_000
    for ev in evs:
        t += 1000
        kind = ev[0]
        if kind == "seg":
            stack.receive(build_ip_tcp(REMOTE, LOCAL, ev[1], tos=ev[2]), t)  # must not raise
        elif kind == "batch":
            stack.receive_batch([build_ip_tcp(REMOTE, LOCAL, s, tos=tos) for s, tos in ev[1]], t)
        elif kind == "icmp":
            stack.receive(_icmp(*ev[1]), t)
        elif kind == "user":
            _user(conn, ev[1], t)
        else:
            t += ev[1]
        stack.poll(t)
        stack.transmit()
    for _ in range(50):
        d = stack.next_deadline()
        if d is None:
            break
        t = max(t, d)
        stack.poll(t)
        stack.transmit()
    for c in stack.conns.values():
        assert c.state is not State.CLOSED
    # The shared empty scoreboard is never written (every TCB starts with it).
    assert NO_SACKS.starts == () and NO_SACKS.ends == () and NO_SACKS.sacked == 0
