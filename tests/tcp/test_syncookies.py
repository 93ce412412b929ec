"""SYN cookies (RFC 4987 §3.6) with Linux's encoding: the codec, then the listener."""

from __future__ import annotations

import random

import pytest

from tcpstack.tcp import Config
from tcpstack.tcp.syncookie import (
    MSSTAB4,
    MSSTAB6,
    PERIOD_US,
    CookieOptions,
    SynCookies,
    decode_ts,
    encode_ts,
    mss_index,
)
from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp

from .conftest import (
    ACK,
    IRS,
    LOCAL,
    LPORT,
    MSS_OPT,
    REMOTE,
    RPORT,
    RST,
    SYN,
    Opt,
    Peer,
    State,
    make_stack,
    out,
    plain_config,
    seg,
)

KEY = (LOCAL, LPORT, REMOTE, RPORT)
T0 = 1_000 * PERIOD_US  # an arbitrary clock: minute 1000


# ---------------------------------------------------------------- the codec
@pytest.mark.parametrize(
    ("mss", "encoded"),
    [(1460, 1460), (8960, 1460), (1459, 1440), (1452, 1440), (1400, 1300), (1299, 536), (536, 536), (100, 536)],
)
def test_mss_rounds_down_to_linux_msstab(mss, encoded):
    assert MSSTAB4[mss_index(mss, MSSTAB4)] == encoded


def test_ipv6_table_is_linux_msstab6():
    assert MSSTAB6 == (1220, 1420, 1440, 8940)
    assert MSSTAB6[mss_index(1440, MSSTAB6)] == 1440


def test_cookie_round_trip_gives_the_mss_back():
    c = SynCookies(b"k" * 32)
    isn, mss = c.make(KEY, IRS, 1460, T0)
    assert mss == 1460
    assert c.check(KEY, IRS, isn, T0) == 1460
    isn2, mss2 = c.make(KEY, IRS, 1400, T0)
    assert mss2 == 1300 and isn2 != isn
    assert c.check(KEY, IRS, isn2, T0 + 5_000_000) == 1300


def test_cookie_depends_on_tuple_client_isn_and_secret():
    c = SynCookies(b"k" * 32)
    isn, _ = c.make(KEY, IRS, 1460, T0)
    # The client's ISN is added, not hashed (as in Linux): one off shifts the
    # index, further off leaves the table.
    assert c.check(KEY, IRS + 1, isn, T0) == 1440
    assert c.check(KEY, IRS + 1000, isn, T0) == 0
    assert c.check((LOCAL, LPORT, REMOTE, RPORT + 1), IRS, isn, T0) == 0  # another port
    assert SynCookies(b"x" * 32).check(KEY, IRS, isn, T0) == 0  # another secret


def test_cookie_lives_for_two_counter_periods():
    """Linux: the 60-second counter may have advanced by at most 1 (MAX_SYNCOOKIE_AGE 2)."""
    c = SynCookies(b"k" * 32)
    made = T0 + PERIOD_US - 1  # the last µs of minute 1000
    isn, _ = c.make(KEY, IRS, 1460, made)
    assert c.check(KEY, IRS, isn, made + 1) == 1460  # minute 1001: age 1
    assert c.check(KEY, IRS, isn, T0 + 2 * PERIOD_US - 1) == 1460
    assert c.check(KEY, IRS, isn, T0 + 2 * PERIOD_US) == 0  # minute 1002: too old
    assert c.check(KEY, IRS, isn, T0 - 1) == 0  # from the future


def test_forged_cookies_are_rejected():
    """20,000 random ACKs (random ISN and cookie): none decodes.  The chance for
    one is about 2/256 * 4/2**24 (~1.9e-9); `tcpstack bench synflood --forged-acks 1000000`
    sends a million through the listener."""
    c = SynCookies(b"k" * 32)
    rng = random.Random(4987)
    accepted = sum(
        1 for _ in range(20_000) if c.check(KEY, rng.getrandbits(32), rng.getrandbits(32), T0)
    )
    assert accepted == 0


@pytest.mark.parametrize("wscale", [None, 0, 7, 14])
@pytest.mark.parametrize("sack", [False, True])
@pytest.mark.parametrize("ecn", [False, True])
def test_timestamp_carries_options(wscale, sack, ecn):
    opts = CookieOptions(wscale, sack, ecn)
    for ts_now in (0x40, 5_000_123, 0xFFFFFFFF):
        ts = encode_ts(ts_now, opts)
        assert ts <= ts_now and ts_now - ts < 64  # never ahead of the clock
        assert decode_ts(ts) == opts


def test_timestamp_wscale_above_14_is_clamped():
    assert decode_ts(encode_ts(10_000, CookieOptions(15, False, False))).wscale == 14


# ---------------------------------------------------------------- the listener
def cookie_stack(**cfg: object):
    st = make_stack(plain_config(tcp_syncookies=2, **cfg))
    return st, Peer(st)


def test_syncookies_2_sends_a_cookie_and_keeps_no_request():
    st, peer = cookie_stack()
    lst = st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, 65535, opts=MSS_OPT))
    assert synack.flags == SYN | ACK and synack.ack == IRS + 1
    assert synack.options == MSS_OPT  # no timestamps: nothing but the MSS
    assert lst.requests == {} and st.conns == {}
    assert st.mib.SyncookiesSent == 1 and st.mib.TCPReqQFullDoCookies == 1
    assert synack.seq == st.syncookies.make(KEY, IRS, 1460, T0)[0]
    assert list(lst.history) == [State.CLOSED, State.LISTEN]


def test_cookie_ack_creates_the_connection():
    st, peer = cookie_stack()
    lst = st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, 65535, opts=(Opt(2, 1400),)))
    assert peer.send(T0 + 1000, seg(IRS + 1, synack.seq + 1, ACK, 4000)) == []
    conn = lst.accept()
    assert conn is not None and conn.state is State.ESTABLISHED
    assert list(conn.history) == [State.SYN_RECEIVED, State.ESTABLISHED]
    assert conn.iss == synack.seq and conn.irs == IRS
    assert conn.snd_mss == 1300  # 1400 rounded down to the table
    assert conn.snd_wnd == 4000 and not conn.ws_ok and not conn.sack_ok and not conn.ts_ok
    assert st.mib.SyncookiesRecv == 1 and st.mib.PassiveOpens == 1
    # It works: data both ways.
    assert conn.send(b"hello", T0 + 2000) == 5
    (data,) = peer.recv()
    assert data.payload == b"hello" and data.seq == synack.seq + 1


def test_cookie_ack_carrying_data_delivers_it():
    st, peer = cookie_stack()
    lst = st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.send(T0 + 1000, seg(IRS + 1, synack.seq + 1, ACK, payload=b"GET /"))
    conn = lst.accept()
    assert conn.recv(100, T0 + 2000) == b"GET /"


def test_timestamps_bring_back_wscale_and_sack():
    st, peer = cookie_stack(tcp_timestamps=1, tcp_sack=1, tcp_window_scaling=1)
    lst = st.listen(LPORT, T0)
    syn_opts = (Opt(2, 1460), Opt(4, None), Opt(8, (777, 0)), Opt(1, None), Opt(3, 9))
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=syn_opts))
    kinds = [o.kind for o in synack.options]
    assert kinds == [2, 4, 8, 1, 3]  # mss, sackOK, TS, nop, wscale: what the SYN asked for
    tsval, tsecr = synack.ts
    assert tsecr == 777 and (tsval & 0x3F) == (9 | 0x10)  # wscale 9, SACK bit
    ack = seg(IRS + 1, synack.seq + 1, ACK, 1000, opts=(Opt(1, None), Opt(1, None), Opt(8, (778, tsval))))
    peer.send(T0 + 1000, ack)
    conn = lst.accept()
    assert conn is not None
    assert conn.ws_ok and conn.snd_wscale == 9 and conn.snd_wnd == 1000 << 9
    assert conn.sack_ok and conn.ts_ok and conn.ts_recent == 778
    assert conn.snd_mss == 1460


def test_cookie_tsval_never_runs_ahead_of_later_timestamps():
    st, peer = cookie_stack(tcp_timestamps=1)
    lst = st.listen(LPORT, T0 + 63_000)
    (synack,) = peer.send(T0 + 63_000, seg(IRS, 0, SYN, opts=(Opt(2, 1460), Opt(8, (5, 0)))))
    tsval = synack.ts[0]
    peer.send(T0 + 63_500, seg(IRS + 1, synack.seq + 1, ACK, opts=(Opt(8, (6, tsval)),)))
    conn = lst.accept()
    conn.send(b"x", T0 + 63_600)
    (data,) = peer.recv()
    assert data.ts[0] >= tsval


def test_without_timestamps_the_synack_offers_no_wscale_or_sack():
    st, peer = cookie_stack(tcp_sack=1, tcp_window_scaling=1)
    st.listen(LPORT, T0)
    syn_opts = (Opt(2, 1460), Opt(1, None), Opt(3, 7), Opt(4, None))
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=syn_opts))
    assert synack.options == (Opt(2, 1460),)


def test_syncookies_1_only_when_the_syn_queue_overflows():
    st = make_stack(plain_config(tcp_syncookies=1))
    peer = Peer(st)
    lst = st.listen(LPORT, T0, backlog=1)
    for i in range(3):
        peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + i))
    assert len(lst.requests) == 2  # Linux >= 6.12: full when qlen > backlog
    assert st.mib.SyncookiesSent == 1 and st.mib.TCPReqQFullDoCookies == 1
    assert lst.syn_queue_max == 2 and lst.syn_queue_limit == 2


def test_forged_ack_gets_rst_and_counts_a_failure():
    st, peer = cookie_stack()
    st.listen(LPORT, T0)
    peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 1))  # a cookie was sent: checks are on
    assert peer.send(T0 + 1, seg(IRS, 123456, ACK)) == [out(123456, 0, RST, 0)]
    assert st.mib.SyncookiesFailed == 1 and st.mib.SyncookiesRecv == 0 and st.conns == {}


def test_ack_is_not_a_cookie_without_a_recent_overflow():
    """Linux's tcp_synq_no_recent_overflow(): two minutes after the last cookie
    a stray ACK is just a stray ACK (RST, no SyncookiesFailed)."""
    st, peer = cookie_stack()
    st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT))
    late = T0 + 2 * PERIOD_US + 1
    assert peer.send(late, seg(IRS + 1, synack.seq + 1, ACK)) == [out(synack.seq + 1, 0, RST, 0)]
    assert st.mib.SyncookiesFailed == 0 and st.mib.SyncookiesRecv == 0


def test_cookie_ack_after_the_counter_moved_twice_is_refused():
    st, peer = cookie_stack()
    st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT))
    peer.send(T0 + PERIOD_US, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + 1))  # keeps checks on
    r = peer.send(T0 + 2 * PERIOD_US, seg(IRS + 1, synack.seq + 1, ACK))
    assert [s.flags for s in r] == [RST]
    assert st.mib.SyncookiesFailed == 1


def test_cookie_ack_with_sack_after_tcp_sack_was_turned_off_is_refused():
    st, peer = cookie_stack(tcp_timestamps=1, tcp_sack=1)
    st.listen(LPORT, T0)
    (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=(Opt(2, 1460), Opt(4, None), Opt(8, (5, 0)))))
    st.config.tcp_sack = 0
    r = peer.send(T0 + 10, seg(IRS + 1, synack.seq + 1, ACK, opts=(Opt(8, (6, synack.ts[0])),)))
    assert [s.flags for s in r] == [RST] and st.conns == {}


def test_cookie_ack_finding_the_accept_queue_full_is_dropped():
    st, peer = cookie_stack()
    lst = st.listen(LPORT, T0, backlog=0)
    acks = []
    for i in range(2):
        (synack,) = peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + i))
        acks.append(seg(IRS + 1, synack.seq + 1, ACK, sport=RPORT + i))
    assert peer.send(T0 + 1, acks[0]) == []
    assert len(lst.accept_queue) == 1
    assert peer.send(T0 + 2, acks[1]) == []  # silently dropped, as Linux's cookie path
    assert st.mib.ListenOverflows == 1 and len(lst.accept_queue) == 1


def test_syncookies_0_drops_when_the_syn_queue_is_full():
    st = make_stack(plain_config(tcp_syncookies=0))
    peer = Peer(st)
    lst = st.listen(LPORT, T0, backlog=1)
    for i in range(4):
        peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=RPORT + i))
    assert len(lst.requests) == 2
    assert st.mib.TCPReqQFullDrop == 2 and st.mib.ListenDrops == 2 and st.mib.SyncookiesSent == 0


def test_max_syn_backlog_quarter_without_cookies():
    """Linux: without cookies the last quarter of tcp_max_syn_backlog is kept for
    proven peers; tcpstack proves none, so 128 -> 97 requests at most."""
    st = make_stack(plain_config(tcp_syncookies=0, tcp_max_syn_backlog=128))
    peer = Peer(st)
    lst = st.listen(LPORT, T0, backlog=4096)
    for i in range(200):
        peer.send(T0, seg(IRS, 0, SYN, opts=MSS_OPT, sport=2000 + i))
    assert len(lst.requests) == 97 == lst.syn_queue_limit
    assert st.mib.ListenDrops == 103 and st.mib.TCPReqQFullDrop == 0


def test_ipv6_cookie_uses_the_ipv6_table():
    st = make_stack(plain_config(tcp_syncookies=2))
    st.addresses.append("fd00::2")
    lst = st.listen(LPORT, T0)
    st.receive(build_ip_tcp("fd00::1", "fd00::2", seg(IRS, 0, SYN, opts=(Opt(2, 1440),))), T0)
    (pkt,) = st.transmit()
    synack = parse_ip_tcp(pkt)[2]
    st.receive(build_ip_tcp("fd00::1", "fd00::2", seg(IRS + 1, synack.seq + 1, ACK)), T0 + 1)
    conn = lst.accept()
    assert conn is not None and conn.snd_mss == 1440


def test_default_config_is_syncookies_1():
    assert Config().tcp_syncookies == 1
