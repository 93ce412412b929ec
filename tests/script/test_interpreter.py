"""The script interpreter itself: lexer, parser, and the runner's semantics,
checked against tcpstack in virtual time (no root needed)."""

from __future__ import annotations

import pytest

from tcpstack.script import parse_script
from tcpstack.script.corpus import run_one
from tcpstack.script.lexer import tokenize
from tcpstack.script.model import (
    BinaryExpr,
    BracedExpr,
    CodeAction,
    CommandAction,
    EllipsisExpr,
    IntExpr,
    ListExpr,
    PacketAction,
    ScriptError,
    SyscallAction,
    TimeKind,
    WordExpr,
)
from tcpstack.script.run import Outcome, Runner
from tcpstack.script.virtual import VirtualHost
from tcpstack.wire.tcp import ACK, FIN, PSH, SYN

SERVER = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0   bind(3, ..., ...) = 0
+0   listen(3, 1) = 0
+0   < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>
+0   > S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>
+.1  < . 1:1(0) ack 1 win 1000
+0   accept(3, ..., ...) = 4
"""


def run(text: str, host: VirtualHost | None = None):
    return Runner(parse_script(text, "t.pkt"), host or VirtualHost()).run()


def failure(text: str) -> str:
    r = run(text)
    assert r.outcome is Outcome.FAIL, (r.outcome, r.message)
    return r.message


# ---------------------------------------------------------------------------- lexer


def test_lexer_times_ellipsis_and_numbers() -> None:
    kinds = [(t.kind, t.text) for t in tokenize("+.01...0.011 fcntl(3, F_GETFL) = 0x2")][:-1]
    assert kinds[:4] == [("PUNCT", "+"), ("FLOAT", ".01"), ("ELLIPSIS", "..."), ("FLOAT", "0.011")]
    assert ("HEX", "0x2") in kinds and ("WORD", "F_GETFL") in kinds


def test_lexer_comments_code_backquotes_and_lines() -> None:
    toks = tokenize("// c\n/* a\nb */ `sysctl x=1`\n%{ assert 1\n}%\n198.18.0.1")
    assert [t.kind for t in toks] == ["BACKQUOTE", "CODE", "IPV4", "EOF"]
    assert [t.line for t in toks[:3]] == [3, 4, 6]


# ---------------------------------------------------------------------------- parser


def test_parse_event_times() -> None:
    s = parse_script("0 close(3) = 0\n+.5 close(3) = 0\n* > . 1:1(0) ack 1\n"
                     "1~2 > . 1:1(0) ack 1\n+0~+.2 > . 1:1(0) ack 1\n")
    kinds = [(e.time.kind, e.time.usecs, e.time.end_usecs) for e in s.events]
    assert kinds == [
        (TimeKind.ABSOLUTE, 0, None), (TimeKind.RELATIVE, 500_000, None), (TimeKind.ANY, 0, None),
        (TimeKind.ABSOLUTE_RANGE, 1_000_000, 2_000_000), (TimeKind.RELATIVE_RANGE, 0, 200_000),
    ]


def test_parse_packets() -> None:
    s = parse_script("0 < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 7 ecr 0,nop,wscale 7>\n"
                     "+0 > P. 1:1001(1000) ack 1 win 257 <nop,nop,sack 1:2 3:4>\n"
                     "+0 > F. 1:1(0) ack 1 <...>\n+0 < 40000>8080 - 1:1(0) win 0\n")
    syn, data, fin, raw = (e.action for e in s.events)
    assert isinstance(syn, PacketAction) and syn.direction == "<" and syn.flags == SYN and syn.win == 65535
    assert syn.options is not None and [o.name for o in syn.options] == ["mss", "sackOK", "TS", "nop", "wscale"]
    assert isinstance(data, PacketAction) and data.flags == PSH | ACK and (data.seq, data.end_seq, data.length) == (1, 1001, 1000)
    assert data.options is not None and data.options[2].value == [(1, 2), (3, 4)]
    assert isinstance(fin, PacketAction) and fin.flags == FIN | ACK and fin.options is None and fin.win is None
    assert isinstance(raw, PacketAction) and (raw.src_port, raw.dst_port, raw.flags) == (40000, 8080, 0)


def test_parse_syscalls() -> None:
    s = parse_script("0 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n"
                     "+0...0.2 read(4, ..., 1000) = 1000\n"
                     "+0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
                     "+0 poll([{fd=3, events=POLLIN, revents=POLLIN}], 1, 0) = 1\n"
                     "+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n"
                     "+0 `sysctl -q net.ipv4.tcp_sack=0`\n+0 %{ assert tcpi_rto > 0 }%\n")
    a = [e.action for e in s.events]
    assert isinstance(a[0], SyscallAction) and a[0].errno == "EINPROGRESS" and a[0].note == "Operation now in progress"
    assert isinstance(a[0].args[1], EllipsisExpr) and a[0].result == IntExpr(-1)
    assert isinstance(a[1], SyscallAction) and a[1].blocking and a[1].end_usecs == 200_000
    assert isinstance(a[2], SyscallAction) and isinstance(a[2].args[2], BinaryExpr) and a[2].args[2].op == "|"
    poll = a[3]
    assert isinstance(poll, SyscallAction) and isinstance(poll.args[0], ListExpr)
    pfd = poll.args[0].items[0]
    assert isinstance(pfd, BracedExpr) and pfd.field("events") == WordExpr("POLLIN")
    assert isinstance(a[5], CommandAction) and isinstance(a[6], CodeAction)


def test_parse_options_and_headers() -> None:
    s = parse_script("--tolerance_usecs=8000\n// tcpstack-deviation: because\n`sysctl -q net.ipv4.tcp_sack=0`\n"
                     "0 close(3) = 0\n`sysctl -q net.ipv4.tcp_sack=1`\n")
    assert s.options == {"tolerance_usecs": "8000"}
    assert s.header == {"deviation": "because"}
    assert s.init_command is not None and s.cleanup_command is not None and len(s.events) == 1


@pytest.mark.parametrize("text, message", [
    ("0 < S 0:0(0)\n", "window must be specified"),
    ("* < S 0:0(0) win 1\n", r"\* can only be used with outbound packets"),
    ("0~1 write(3, ..., 1) = 1\n", "range can only be used with outbound packets"),
    ("0 > . 1:5(3)\n", "inconsistent TCP sequence numbers"),
    ("0 > SX 0:0(0)\n", "unknown TCP flag"),
    ("0 > S 0:0(0) <mss 1460,nop>\n", "not padded correctly"),
    ("0 < S 0:0(0) win 1 <...>\n", "can only be used with outbound packets"),
    ("0 > S 0:0(0) <FO 1234>\n", "not supported"),
    ("", "no events"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(text)


# ---------------------------------------------------------------------------- runner


def test_passive_open_and_data_pass() -> None:
    r = run(SERVER + "+0 write(4, ..., 1000) = 1000\n+0 > P. 1:1001(1000) ack 1\n")
    assert r.outcome is Outcome.PASS and r.events == 10


def test_virtual_time_runs_long_scripts_fast() -> None:
    r = run(SERVER + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1\n"
                     "// unacknowledged: retransmitted after the RTO, then backed off\n"
                     "+.2~+.3 > P. 1:101(100) ack 1\n+.4~+.6 > P. 1:101(100) ack 1\n+30 close(4) = 0\n")
    assert r.outcome is Outcome.PASS, r.message
    assert r.script_time_us >= 30_000_000 and r.wall_s < 1.0


def test_wrong_packet_message_names_line_script_and_actual_packet() -> None:
    msg = failure(SERVER + "+0 write(4, ..., 1000) = 1000\n+0 > P. 1:1001(1000) ack 2\n")
    first, script_line, actual_line = msg.splitlines()
    assert first.startswith("t.pkt:10: error handling packet: live packet field tcp_ack_seq: expected: 2")
    assert script_line.startswith("script packet:") and "P. 1:1001(1000) ack 2" in script_line
    assert actual_line.startswith("actual packet:") and "P. 1:1001(1000) ack 1" in actual_line


def test_no_packet_message() -> None:
    msg = failure(SERVER + "+0 > P. 1:1001(1000) ack 1\n")
    assert "t.pkt:9: error handling packet: expected outbound packet at 0.100000 sec but no packet was sent" in msg
    assert msg.splitlines()[-1] == "actual packet: none"


def test_timing_error_and_tolerance() -> None:
    # The SYN-ACK is sent at 0 s; expecting it 5 ms later is outside the 4 ms default...
    text = SERVER.replace("+0   > S. 0:0(0)", "+.005 > S. 0:0(0)")
    assert "timing error: expected outbound packet at 0.005000 sec but happened at 0.000000 sec" in failure(text)
    # ...and inside a wider --tolerance_usecs.
    assert run("--tolerance_usecs=6000\n" + text).outcome is Outcome.PASS


def test_tolerance_grows_with_the_gap() -> None:
    # 12.5 % of a 1 s gap is 125 ms: a packet 100 ms off passes, 150 ms off does not.
    base = SERVER + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1\n"
    late = base + "+1.1 < . 1:1(0) ack 101 win 1000\n"
    assert run(base + "+1.1 > P. 1:101(100) ack 1\n").outcome is Outcome.FAIL  # RTO is 0.2 s
    assert run(late).outcome is Outcome.PASS


def test_any_time_and_ranges() -> None:
    base = SERVER + "+0 write(4, ..., 100) = 100\n+0 > P. 1:101(100) ack 1\n"
    assert run(base + "* > P. 1:101(100) ack 1\n").outcome is Outcome.PASS
    assert run(base + "+.1~+.3 > P. 1:101(100) ack 1\n").outcome is Outcome.PASS
    assert "relative time range" in failure(base + "+.5~+.6 > P. 1:101(100) ack 1\n")


def test_syscall_result_and_errno_messages() -> None:
    msg = failure(SERVER + "+0 write(4, ..., 10) = 9\n")
    assert "t.pkt:9: runtime error in write call: Expected result 9 but got 10" in msg
    msg = failure(SERVER + "+0 shutdown(4, SHUT_WR) = 0\n+0 write(4, ..., 10) = -1 EAGAIN (Resource temporarily unavailable)\n")
    assert "Expected errno 11 (Resource temporarily unavailable) but got 32 (Broken pipe)" in msg


def test_unlisted_outbound_packet_fails_only_before_a_later_outbound_line() -> None:
    # Out-of-order data: the stack sends a duplicate ACK at once; the script does not list it.
    data = SERVER + "+.01 < P. 11:21(10) ack 1 win 1000\n"
    assert run(data).outcome is Outcome.PASS
    msg = failure(data + "+0 write(4, ..., 5) = 5\n+0 > P. 1:6(5) ack 1\n")
    assert "live packet payload: expected 5 bytes vs actual 0 bytes" in msg and ". 1:1(0) ack 1 win" in msg


def test_burst_written_as_one_line() -> None:
    text = SERVER + "+0 write(4, ..., 3000) = 3000\n+0 > P. 1:3001(3000) ack 1\n"
    assert run(text).outcome is Outcome.PASS
    text = SERVER + "+0 write(4, ..., 3000) = 3000\n+0 > P. 1:2001(2000) ack 1\n"
    assert "live packet payload: expected 2000 bytes vs actual 2920 bytes" in failure(text)


def test_options_compared_in_order_and_ellipsis_skips() -> None:
    assert "bad outbound TCP options" in failure(SERVER.replace("<mss 1460,nop,wscale 7>\n+.1", "<mss 1460,wscale 7,nop>\n+.1", 1)
                                                 .replace("> S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>", "> S. 0:0(0) ack 1 <nop,mss 1460,wscale 7>"))
    assert run(SERVER.replace("> S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>", "> S. 0:0(0) ack 1 <...>")).outcome is Outcome.PASS
    msg = failure(SERVER.replace("> S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>", "> S. 0:0(0) ack 1 <mss 1000,nop,wscale 7>"))
    assert "expected: mss 1000 actual: mss 1460" in msg


def test_timestamps_mapped_both_ways() -> None:
    text = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   bind(3, ..., ...) = 0
+0   listen(3, 1) = 0
+0   < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 700 ecr 0,nop,wscale 7>
+0   > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 5 ecr 700,nop,wscale 7>
+.01 < . 1:1(0) ack 1 win 1000 <nop,nop,TS val 710 ecr 5>
+0   accept(3, ..., ...) = 4
+1   write(4, ..., 10) = 10
+0   > P. 1:11(10) ack 1 <nop,nop,TS val 1015 ecr 710>
"""
    assert run(text).outcome is Outcome.PASS
    # An ecr the stack never sent is rewritten to the real value too (interpolated), so
    # PAWS-style checks see the stack's own clock.
    assert run(text.replace("ecr 5>", "ecr 6>")).outcome is Outcome.PASS
    # With --tcp_ts_tick_usecs=1000 outbound TS val is checked (1 tick = 1 ms).
    assert run("--tcp_ts_tick_usecs=1000\n" + text).outcome is Outcome.PASS
    assert "bad outbound TCP timestamp value" in failure("--tcp_ts_tick_usecs=1000\n" + text.replace("TS val 1015", "TS val 1500"))


def test_blocking_call_returns_later_and_end_time_is_checked() -> None:
    text = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0...0.2 connect(3, ..., ...) = 0
+0   > S 0:0(0) <...>
+.2  < S. 0:0(0) ack 1 win 65535 <mss 1460>
+0   > . 1:1(0) ack 1
"""
    assert run(text).outcome is Outcome.PASS
    assert "timing error: expected system call return at 0.100000 sec but happened at 0.200000 sec" in failure(
        text.replace("+0...0.2", "+0...0.1"))


def test_unmarked_blocking_call_is_reported() -> None:
    text = SERVER + "+0 read(4, ..., 10) = 10\n"
    assert "blocked and did not return" in failure(text)


def test_nonblocking_socket_errors() -> None:
    text = SERVER + "+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n" \
                    "+0 read(4, ..., 10) = -1 EAGAIN (Resource temporarily unavailable)\n" \
                    "+0 fcntl(4, F_GETFL) = 0x802 (flags O_RDWR|O_NONBLOCK)\n"
    assert run(text).outcome is Outcome.PASS


def test_init_sysctl_sets_tunables_and_unknown_ones_are_noted() -> None:
    text = "`sysctl -q net.ipv4.tcp_sack=0 net.ipv4.tcp_frto=2`\n" + SERVER.replace(
        "<mss 1460,nop,wscale 7>\n+0   > S.", "<mss 1460,nop,nop,sackOK,nop,wscale 7>\n+0   > S.")
    r = run(text)
    assert r.outcome is Outcome.PASS, r.message  # no sackOK in the SYN-ACK: SACK is off
    assert r.notes == ["sysctl net.ipv4.tcp_frto is not modelled by tcpstack; ignored"]
    r = run("`rm -rf /`\n" + SERVER)
    assert r.outcome is Outcome.ERROR and "unsupported command" in r.message


def test_code_assertions() -> None:
    assert run(SERVER + "+0 %{ assert tcpi_state == TCP_ESTABLISHED and tcpi_snd_mss == 1460 }%\n").outcome is Outcome.PASS
    msg = failure(SERVER + "+0 %{ assert tcpi_snd_cwnd == 3, tcpi_snd_cwnd }%\n")
    assert "assertion failed in %{ }% code (10)" in msg and "tcpi_snd_cwnd=10" in msg
    r = run(SERVER + "+0 %{ assert tcpi_no_such_field == 0 }%\n")
    assert r.outcome is Outcome.ERROR and "tcpi_no_such_field" in r.message


def test_poll_and_getsockopt() -> None:
    text = SERVER + (
        "+0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLOUT}], 1, 0) = 1\n"
        "+.01 < P. 1:11(10) ack 1 win 1000\n+0 > . 1:1(0) ack 11\n"
        "+0 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1\n"
        "+0 getsockopt(4, SOL_SOCKET, SO_ERROR, [0], [4]) = 0\n"
        "+0 setsockopt(4, SOL_SOCKET, SO_RCVBUF, [20000], 4) = 0\n"
        "+0 getsockopt(4, SOL_SOCKET, SO_RCVBUF, [40000], [4]) = 0\n"
        "+0 getsockopt(4, SOL_TCP, TCP_NODELAY, [0], [4]) = 0\n")
    r = run(text)
    assert r.outcome is Outcome.PASS, r.message
    assert "Bad getsockopt optval: expected: 1 actual: 0" in failure(
        SERVER + "+0 getsockopt(4, SOL_TCP, TCP_NODELAY, [1], [4]) = 0\n")


def test_blocking_poll_times_out_in_virtual_time() -> None:
    r = run(SERVER + "+0...1.5 poll([{fd=4, events=POLLIN, revents=0}], 1, 1500) = 0\n")
    assert r.outcome is Outcome.PASS, r.message


def test_sequence_numbers_relative_to_the_peer_isn() -> None:
    text = SERVER.replace("< S 0:0(0)", "< S 1000000:1000000(0)").replace("> S. 0:0(0) ack 1 ", "> S. 0:0(0) ack 1000001 ")
    assert run(text + "+0 < P. 1:11(10) ack 1 win 1000\n+0 > . 1:1(0) ack 11\n").outcome is Outcome.PASS


def test_corpus_headers(tmp_path) -> None:
    dev = tmp_path / "dev.pkt"
    dev.write_text("// tcpstack-deviation: this stack sends the SYN-ACK later\n" +
                   SERVER.replace("+0   > S. 0:0(0)", "+.05 > S. 0:0(0)"))
    assert run_one(str(dev)).verdict == "xfail"
    fixed = tmp_path / "fixed.pkt"
    fixed.write_text("// tcpstack-deviation: fixed since\n" + SERVER)
    assert run_one(str(fixed)).verdict == "xpass"
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 < S 0:0(0)\n")
    assert run_one(str(bad)).verdict == "error"


# ---------------------------------------------------------------------------- IPv6 (--ip_version)

SERVER6 = SERVER.replace("mss 1460", "mss 1440")


def test_ip_version_option_is_one_value_and_checked() -> None:
    s = parse_script("--ip_version=ipv4-mapped-ipv6\n--tolerance_usecs=8000\n" + SERVER)
    assert s.options == {"ip_version": "ipv4-mapped-ipv6", "tolerance_usecs": "8000"}
    with pytest.raises(ScriptError, match=r"--ip_version=ipv5: unknown IP version \(choose one of ipv4, ipv6"):
        parse_script("--ip_version=ipv5\n" + SERVER)


def test_ipv6_script_runs_over_ipv6_with_its_mss() -> None:
    """The peer's packets are IPv6 with a valid checksum (the engine drops bad ones, so the
    handshake completing shows it), the stack answers from fd00:198:18::2 with MSS 1440."""
    host = VirtualHost()
    seen: list[str] = []
    r = Runner(parse_script("--ip_version=ipv6\n" + SERVER6, "t.pkt"), host,
               verbose=seen.append).run()
    assert r.passed, r.message
    assert host.stack.conns and all(k[0] == "fd00:198:18::2" and k[2] == "fd00:198:18::1" for k in host.stack.conns)
    assert host.stack.mib.nstat()["TcpInCsumErrors"] == 0
    # The same script over IPv4 meets MSS 1460, not 1440.
    r4 = run(SERVER6)
    assert r4.outcome is Outcome.FAIL and "mss 1440" in r4.message and "mss 1460" in r4.message


def test_ip_version_argument_applies_unless_the_script_names_its_own() -> None:
    assert Runner(parse_script(SERVER6, "t.pkt"), VirtualHost(), ip_version="ipv6").run().passed
    # The script's own line wins over the argument (as ksft_runner.sh reads it).
    r = Runner(parse_script("--ip_version=ipv4\n" + SERVER6, "t.pkt"), VirtualHost(), ip_version="ipv6").run()
    assert r.outcome is Outcome.FAIL
    with pytest.raises(ValueError, match="unknown IP version"):
        Runner(parse_script(SERVER, "t.pkt"), VirtualHost(), ip_version="ipv7")


def test_ipv6_options_checksum_and_mapped_addresses() -> None:
    from tcpstack.script.addressing import Addressing, addressing
    from tcpstack.script.run import _with_options
    from tcpstack.wire.ip import build_ip_tcp, parse_ip_tcp
    from tcpstack.wire.tcp import Segment

    seg = Segment(40000, 8080, 7, 0, SYN, 65535, 0, (), b"")
    pkt = _with_options(build_ip_tcp("fd00:198:18::1", "fd00:198:18::2", seg), bytes((2, 4, 5, 160)))
    src, dst, parsed = parse_ip_tcp(pkt)  # verifies the checksum
    assert (src, dst, parsed.options[0].value, len(pkt)) == ("fd00:198:18::1", "fd00:198:18::2", 1440, 64)
    mapped = addressing("ipv4-mapped-ipv6")
    assert (mapped.domain, mapped.sockaddr("198.18.0.2"), mapped.local) == (10, "::ffff:198.18.0.2", "198.18.0.2")
    assert Addressing.wire("::ffff:198.18.0.1") == "198.18.0.1"
    assert Addressing.wire("fd00:198:18:0::1") == "fd00:198:18::1"
    assert addressing("ipv4").domain == 2 and addressing("ipv6").domain == 10


def test_ipv6_af_inet_socket_refuses_an_ipv6_bind() -> None:
    msg = failure("--ip_version=ipv6\n0 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n")
    assert "errno 97" in msg  # EAFNOSUPPORT, as Linux for a sockaddr_in6 on an AF_INET socket


# ---------------------------------------------------------------------------- several connections

LISTEN = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0   bind(3, ..., ...) = 0
+0   listen(3, 5) = 0
+0   < 40000>8080 S 0:0(0) win 65535 <mss 1460,nop,wscale 7>
+0   > 8080>40000 S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>
+0   < 40001>8080 S 0:0(0) win 65535 <mss 1460,nop,wscale 7>
+0   > 8080>40001 S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>
+.01 < 40001>8080 . 1:1(0) ack 1 win 1000
+0   < 40000>8080 . 1:1(0) ack 1 win 1000
+0   accept(3, ..., ...) = 4
+0   accept(3, ..., ...) = 5
"""


def test_ports_pick_the_connection_and_accept_maps_fds_in_handshake_order() -> None:
    host = VirtualHost()
    r = run(LISTEN + "+0 write(4, ..., 10) = 10\n+0 > 8080>40001 P. 1:11(10) ack 1\n"
            "+0 write(5, ..., 20) = 20\n+0 > 8080>40000 P. 1:21(20) ack 1\n", host)
    assert r.passed, r.message
    assert sorted(k[3] for k in host.stack.conns) == [40000, 40001]
    # fd 4 is the connection from 40001 (its handshake completed first), not 40000.
    msg = failure(LISTEN + "+0 write(4, ..., 10) = 10\n+0 > 8080>40000 P. 1:11(10) ack 1\n")
    assert "no packet was sent" in msg


def test_packets_of_another_connection_wait_for_their_line() -> None:
    """The order between connections is not checked, the order within each is."""
    r = run(LISTEN + "+0 write(4, ..., 10) = 10\n+0 write(5, ..., 20) = 20\n"
            "+0 > 8080>40000 P. 1:21(20) ack 1\n+0 > 8080>40001 P. 1:11(10) ack 1\n")
    assert r.passed, r.message
    msg = failure(LISTEN + "+0 write(4, ..., 10) = 10\n+0 write(4, ..., 5) = 5\n"
                  "+0 > 8080>40001 P. 11:16(5) ack 1\n")
    assert "expected 5 bytes vs actual 10 bytes" in msg and "actual packet:  0.010000 P. 1:11(10)" in msg


def test_outbound_port_without_a_connection_fails() -> None:
    msg = failure(LISTEN + "+0 > 8080>40009 P. 1:11(10) ack 1\n")
    assert "no connection with remote port 40009" in msg
