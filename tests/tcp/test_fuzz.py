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
segments = st.builds(
    lambda seq_, ack, flags, win, urg, opts, payload: Segment(RPORT, LPORT, seq_, ack, flags, win, urg, opts, payload),
    st.one_of(near(IRS), U32),
    st.one_of(near(ISS), U32),
    st.integers(0, 0x1FF),
    st.integers(0, 65535),
    st.integers(0, 65535),
    options,
    st.binary(max_size=3000),
)


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
