"""Generate tests/scripts/states/: one script per RFC 9293 state x arriving segment.

    python tests/script/gen_state_cells.py          # rewrites tests/scripts/states/*.pkt

Each script brings tcpstack (the passive side, or the active side for
SYN-SENT) into one of the eleven states, then the peer sends one kind of
segment (SYN, RST exact / in window / out of window, ACK out of window, ACK
of unsent data, data in and out of window, FIN), and the script states the
answer.  Where the answer is silence, a probe follows that proves it: a
later outbound line would meet any packet the event had provoked.

The expectations are what Linux does (each generated script was run with
``tcpstack script --kernel``); where tcpstack differs, DEVIATIONS adds the
header that records it.  The generated files are committed; rerun this
script after changing a template and check the diff.
"""

from __future__ import annotations

import os
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "scripts", "states")

LISTEN = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0   bind(3, ..., ...) = 0
+0   listen(3, 1) = 0
"""
SYN_RECEIVED = LISTEN + """
+0   < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>
+0   > S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>
"""
ESTABLISHED = SYN_RECEIVED + """\
+.01 < . 1:1(0) ack 1 win 1000
+0   accept(3, ..., ...) = 4
"""
FIN_WAIT_1 = ESTABLISHED + """\
+.01 shutdown(4, SHUT_WR) = 0
+0   > F. 1:1(0) ack 1
"""
FIN_WAIT_2 = FIN_WAIT_1 + """\
+.01 < . 1:1(0) ack 2 win 1000
"""
CLOSE_WAIT = ESTABLISHED + """\
+.01 < F. 1:1(0) ack 1 win 1000
+0~+.006 > . 1:1(0) ack 2
"""
LAST_ACK = CLOSE_WAIT + """\
+.01 shutdown(4, SHUT_WR) = 0
+0   > F. 1:1(0) ack 2
"""
CLOSING = FIN_WAIT_1 + """\
+.01 < F. 1:1(0) ack 1 win 1000
+0   > . 2:2(0) ack 2
"""
TIME_WAIT = FIN_WAIT_2 + """\
+.01 < F. 1:1(0) ack 2 win 1000
+0   > . 2:2(0) ack 2
"""
SYN_SENT = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0
+0   connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)
+0   > S 0:0(0) <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
"""

# name: (preamble, RCV.NXT, SND.NXT, how the state was reached).  Segments from the peer
# acknowledge SND.UNA (not our FIN where it is still unacknowledged), so the state stays.
SYNCHRONIZED = {
    "established": (ESTABLISHED, 1, 1, "passive open, handshake complete"),
    "fin-wait-1": (FIN_WAIT_1, 1, 2, "ESTABLISHED, then shutdown(SHUT_WR): our FIN is not yet acknowledged"),
    "fin-wait-2": (FIN_WAIT_2, 1, 2, "FIN-WAIT-1, then the peer acknowledged our FIN"),
    "close-wait": (CLOSE_WAIT, 2, 1, "ESTABLISHED, then the peer's FIN arrived"),
    "closing": (CLOSING, 2, 2, "FIN-WAIT-1, then the peer's FIN crossed ours (simultaneous close)"),
    "last-ack": (LAST_ACK, 2, 2, "CLOSE-WAIT, then shutdown(SHUT_WR): our FIN is not yet acknowledged"),
    "time-wait": (TIME_WAIT, 2, 2, "FIN-WAIT-2, then the peer's FIN arrived"),
}
AFTER_FIN = ("close-wait", "closing", "last-ack", "time-wait")


def dupack(n: int, r: int) -> str:
    return f"+0   > . {n}:{n}(0) ack {r}"


def gone(n: int, r: int) -> list[str]:
    """Probe: the connection no longer exists, so a bare ACK draws a RST <SEQ=SEG.ACK>."""
    return ["// The connection is gone: a segment for it is answered with RST.",
            f"+.01 < . {r}:{r}(0) ack {n} win 1000", f"+0   > R {n}:{n}(0)"]


def alive(n: int, r: int) -> list[str]:
    """Probe: the connection is still there and RCV.NXT unchanged (an out-of-window ACK draws a duplicate ACK)."""
    return ["// Nothing was sent, and the connection is unchanged: an out-of-window",
            "// segment still draws an ACK of the same RCV.NXT.",
            f"+.01 < . {r + 1000000}:{r + 1000000}(0) ack {n} win 1000", dupack(n, r)]


def events(state: str, r: int, n: int) -> dict[str, tuple[str, list[str]]]:
    """event name -> (what it checks, lines after the preamble)."""
    tw = state == "time-wait"
    a = n - 1 if state in ("fin-wait-1", "closing", "last-ack") else n  # SND.UNA
    ev: dict[str, tuple[str, list[str]]] = {}

    syn = f"+.01 < S {r + 1000}:{r + 1000}(0) win 1000 <mss 1460,nop,wscale 7>"
    if tw:
        ev["syn-in-window"] = (
            "a SYN with a sequence number above RCV.NXT may reopen the 4-tuple (RFC 9293 MAY-2, "
            "RFC 6191); the new ISN is above anything the old connection used (Linux: SND.NXT + 65537)",
            [syn, f"+0   > S. {n + 65537}:{n + 65537}(0) ack {r + 1001} <mss 1460,nop,wscale 7>"],
        )
        ev["syn-old"] = (
            "a SYN at or below RCV.NXT is an old duplicate: TIME-WAIT answers with an ACK and stays",
            ["+.01 < S 0:0(0) win 1000 <mss 1460,nop,wscale 7>", dupack(n, r)],
        )
    else:
        ev["syn-in-window"] = (
            "a SYN in a synchronized state draws a challenge ACK <SEQ=SND.NXT><ACK=RCV.NXT> "
            "and is dropped (RFC 5961 4.2, RFC 9293 3.10.7.4 fourth)",
            [syn, dupack(n, r)],
        )
        ev["syn-old"] = (
            "a SYN below the window draws a challenge ACK too, whatever its sequence number (RFC 5961 4.2)",
            ["+.01 < S 0:0(0) win 1000 <mss 1460,nop,wscale 7>", dupack(n, r)],
        )

    ev["rst-exact"] = (
        "a RST whose sequence number is exactly RCV.NXT resets the connection "
        "(RFC 5961 3.2, RFC 9293 3.10.7.4 second" + (", TIME-WAIT assassination with tcp_rfc1337=0)" if tw else ")"),
        [f"+.01 < R {r}:{r}(0) win 0", *gone(n, r)],
    )
    if tw:
        ev["rst-in-window"] = (
            "a RST in TIME-WAIT that does not match RCV.NXT exactly is dropped; TIME-WAIT remains",
            [f"+.01 < R {r + 100}:{r + 100}(0) win 0",
             "// TIME-WAIT still answers a data segment with an ACK (not with RST).",
             f"+.01 < P. {r}:{r + 10}(10) ack {a} win 1000", dupack(n, r)],
        )
    else:
        ev["rst-in-window"] = (
            "a RST inside the window but not at RCV.NXT draws a challenge ACK (RFC 5961 3.2)",
            [f"+.01 < R {r + 100}:{r + 100}(0) win 0", dupack(n, r)],
        )
    ev["rst-out-of-window"] = (
        "a RST outside the window is dropped silently (RFC 9293 3.10.7.4 first: no ACK for a RST)",
        [f"+.01 < R {r + 1000000}:{r + 1000000}(0) win 0", *alive(n, r)],
    )
    ev["ack-out-of-window"] = (
        "an unacceptable segment (sequence number outside the window) draws an ACK and is dropped "
        "(RFC 9293 3.10.7.4 first)",
        [f"+.01 < . {r + 1000000}:{r + 1000000}(0) ack {a} win 1000", dupack(n, r)],
    )
    ev["data-out-of-window"] = (
        "data outside the window draws an ACK of RCV.NXT and is dropped (RFC 9293 3.10.7.4 first)",
        [f"+.01 < P. {r + 1000000}:{r + 1000010}(10) ack {a} win 1000", dupack(n, r)],
    )
    if state in ("established", "fin-wait-1", "fin-wait-2"):
        ev["data"] = (
            "in-window data is accepted and acknowledged (RFC 9293 3.10.7.4 seventh)",
            [f"+.01 < P. {r}:{r + 10}(10) ack {a} win 1000", dupack(n, r + 10),
             "+0   read(4, ..., 100) = 10"],
        )
    elif tw:
        ev["data"] = (
            "a data segment in TIME-WAIT is not accepted; TIME-WAIT answers it with an ACK",
            [f"+.01 < P. {r}:{r + 10}(10) ack {a} win 1000", dupack(n, r)],
        )
    else:
        ev["data"] = (
            "data after the peer's FIN is ignored (RFC 9293 3.10.7.4 seventh: "
            "'This should not occur ... Ignore the segment text')",
            [f"+.01 < P. {r}:{r + 10}(10) ack {a} win 1000", *alive(n, r)],
        )
    if state == "established":
        ev["fin"] = (
            "the peer's FIN: ACK it, enter CLOSE-WAIT, reads return end of file (RFC 9293 3.10.7.4 eighth). "
            "Linux may delay that ACK by up to a timer tick (it expects the application to close soon)",
            [f"+.01 < F. {r}:{r}(0) ack {a} win 1000", f"+0~+.006 > . {n}:{n}(0) ack {r + 1}",
             "+0   read(4, ..., 100) = 0",
             "+0   %{ assert tcpi_state == TCP_CLOSE_WAIT, tcpi_state }%"],
        )
    elif state == "fin-wait-1":
        ev["fin"] = (
            "the peer's FIN before the ACK of ours: ACK it, enter CLOSING (simultaneous close)",
            [f"+.01 < F. {r}:{r}(0) ack {n - 1} win 1000", dupack(n, r + 1),
             "+0   %{ assert tcpi_state == TCP_CLOSING, tcpi_state }%"],
        )
    elif state == "fin-wait-2":
        ev["fin"] = (
            "the peer's FIN in FIN-WAIT-2: ACK it and enter TIME-WAIT (the socket itself reads CLOSE, "
            "a TIME-WAIT record takes over)",
            [f"+.01 < F. {r}:{r}(0) ack {a} win 1000", dupack(n, r + 1),
             "+0   read(4, ..., 100) = 0"],
        )
    else:
        ev["fin"] = (
            "a retransmitted FIN (our ACK of it was lost) is acknowledged again",
            [f"+.01 < F. {r - 1}:{r - 1}(0) ack {a} win 1000", dupack(n, r)],
        )
    if tw:
        ev["ack-unsent"] = (
            "an ACK of data never sent, at RCV.NXT, in TIME-WAIT: dropped silently",
            [f"+.01 < . {r}:{r}(0) ack {n + 1000} win 1000", *alive(n, r)],
        )
    else:
        ev["ack-unsent"] = (
            "an ACK of data never sent (SEG.ACK > SND.NXT): 'send an ACK, drop the segment' "
            "(RFC 9293 3.10.7.4 fifth; RFC 5961 5.2)",
            [f"+.01 < . {r}:{r}(0) ack {n + 1000} win 1000", dupack(n, r)],
        )
    if state in AFTER_FIN and not tw:
        ev["rst-at-fin"] = (
            "a RST whose sequence number is RCV.NXT-1 (the peer's FIN) after the FIN: Linux takes it "
            "as exact (tcp_reset_check) and resets",
            [f"+.01 < R {r - 1}:{r - 1}(0) win 0", *gone(n, r)],
        )
    return ev


# state -> {event -> header} for cells where tcpstack is known to differ from Linux.
DEVIATIONS: dict[tuple[str, str], str] = {}


def other_cells() -> dict[str, tuple[str, str, list[str]]]:
    """name -> (what it checks, preamble, lines) for LISTEN, CLOSED, SYN-SENT, SYN-RECEIVED."""
    c: dict[str, tuple[str, str, list[str]]] = {}
    syn_probe = ["// The listener still works and sent nothing meanwhile.",
                 "+.01 < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>",
                 "+0   > S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>"]
    c["listen-ack"] = ("LISTEN: any acknowledgment is bad: <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.2 second)",
                       LISTEN, ["+.01 < . 1:1(0) ack 1000 win 1000", "+0   > R 1000:1000(0)"])
    c["listen-rst"] = ("LISTEN: an incoming RST is ignored (RFC 9293 3.10.7.2 first)",
                       LISTEN, ["+.01 < R 1:1(0) win 0", *syn_probe])
    c["listen-fin"] = ("LISTEN: a FIN with ACK is answered like any ACK: RST <SEQ=SEG.ACK>",
                       LISTEN, ["+.01 < F. 1:1(0) ack 1000 win 1000", "+0   > R 1000:1000(0)"])
    c["listen-data-no-ack"] = ("LISTEN: a segment with neither SYN, RST nor ACK is dropped (RFC 9293 3.10.7.2 fourth)",
                               LISTEN, ["+.01 < P 1:11(10) win 1000", *syn_probe])
    c["listen-synack"] = ("LISTEN: a SYN-ACK is an acknowledgment, so RST <SEQ=SEG.ACK>",
                          LISTEN, ["+.01 < S. 0:0(0) ack 1000 win 1000", "+0   > R 1000:1000(0)"])
    c["listen-syn"] = ("LISTEN: a SYN gets a SYN-ACK and a half-open connection (RFC 9293 3.10.7.2 third)",
                       LISTEN, ["+.01 < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>",
                                "+0   > S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>"])

    c["closed-syn"] = ("CLOSED: a SYN to a port without a listener: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> "
                       "(RFC 9293 3.10.7.1)", "", ["0    < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>",
                                                    "+0   > R. 0:0(0) ack 1"])
    c["closed-ack"] = ("CLOSED: a segment with ACK: <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.1)",
                       "", ["0    < . 1:1(0) ack 1000 win 1000", "+0   > R 1000:1000(0)"])
    c["closed-data-no-ack"] = ("CLOSED: data without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>",
                               "", ["0    < P 1:11(10) win 1000", "+0   > R. 0:0(0) ack 11"])
    c["closed-rst"] = ("CLOSED: an incoming RST is discarded, never answered (RFC 9293 3.10.7.1)",
                       "", ["0    < R 0:0(0) win 0", "// A later SYN is answered: nothing came out before it.",
                            "+.01 < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>", "+0   > R. 0:0(0) ack 1"])
    c["closed-fin"] = ("CLOSED: a FIN with ACK: <SEQ=SEG.ACK><CTL=RST>",
                       "", ["0    < F. 1:1(0) ack 1000 win 1000", "+0   > R 1000:1000(0)"])

    # Linux: after an unacceptable ACK in SYN-SENT it re-arms the SYN timer to its minimum
    # ("Previous FIN/ACK or RST/ACK might be ignored"), so the SYN goes out again at once.
    quick_syn = ["+0~+.015 > S 0:0(0) <mss 1460,sackOK,TS val 120 ecr 0,nop,wscale 7>"]
    good_synack = ["+.01 < S. 0:0(0) ack 1 win 65535 <mss 1460,nop,wscale 7>", "+0   > . 1:1(0) ack 1",
                   "+0   getsockopt(3, SOL_SOCKET, SO_ERROR, [0], [4]) = 0"]
    c["syn-sent-synack-bad-ack"] = (
        "SYN-SENT: a SYN-ACK acknowledging something we never sent: <SEQ=SEG.ACK><CTL=RST>, and "
        "the connection attempt goes on (RFC 9293 3.10.7.3 first)",
        SYN_SENT, ["+.01 < S. 0:0(0) ack 1000 win 65535 <mss 1460,nop,wscale 7>", "+0   > R 1000:1000(0)",
                   *quick_syn, *good_synack])
    c["syn-sent-rst-bad-ack"] = (
        "SYN-SENT: a RST whose ACK is unacceptable is dropped (RFC 9293 3.10.7.3 first/second)",
        SYN_SENT, ["+.01 < R. 0:0(0) ack 1000 win 0", *quick_syn, *good_synack])
    c["syn-sent-rst-no-ack"] = (
        "SYN-SENT: a RST without ACK is dropped (RFC 9293 3.10.7.3 second)",
        SYN_SENT, ["+.01 < R 0:0(0) win 0", *good_synack])
    c["syn-sent-rst-good-ack"] = (
        "SYN-SENT: a RST with an acceptable ACK: 'connection reset' -> ECONNREFUSED (RFC 9293 3.10.7.3 second)",
        SYN_SENT, ["+.01 < R. 0:0(0) ack 1 win 0",
                   "+0   getsockopt(3, SOL_SOCKET, SO_ERROR, [ECONNREFUSED], [4]) = 0"])
    c["syn-sent-ack-only"] = (
        "SYN-SENT: an acceptable ACK without SYN is dropped (RFC 9293 3.10.7.3 fifth)",
        SYN_SENT, ["+.01 < . 0:0(0) ack 1 win 1000", *good_synack])
    c["syn-sent-syn"] = (
        "SYN-SENT: a SYN without ACK is a simultaneous open: SYN-RECEIVED, answer SYN-ACK with our ISN "
        "(RFC 9293 3.10.7.3 fourth, MUST-10)",
        SYN_SENT, ["+.01 < S 0:0(0) win 65535 <mss 1460,nop,wscale 7>",
                   "+0   > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 200 ecr 0,nop,wscale 7>",
                   "+.01 < . 1:1(0) ack 1 win 1000",
                   "+0   getsockopt(3, SOL_SOCKET, SO_ERROR, [0], [4]) = 0"])

    accept = ["+.01 < . 1:1(0) ack 1 win 1000", "+0   accept(3, ..., ...) = 4"]
    c["syn-received-ack-bad"] = (
        "SYN-RECEIVED: an unacceptable ACK: <SEQ=SEG.ACK><CTL=RST>; the half-open connection stays "
        "(RFC 9293 3.10.7.4 fifth)",
        SYN_RECEIVED, ["+.01 < . 1:1(0) ack 1000 win 1000", "+0   > R 1000:1000(0)", *accept])
    c["syn-received-rst-exact"] = (
        "SYN-RECEIVED (passive): a RST at RCV.NXT returns to LISTEN; the half-open connection is gone",
        SYN_RECEIVED, ["+.01 < R 1:1(0) win 0", "+.01 < . 1:1(0) ack 1 win 1000", "+0   > R 1:1(0)"])
    c["syn-received-data"] = (
        "SYN-RECEIVED: the handshake's ACK may carry data: ESTABLISHED, the data is acknowledged and read",
        SYN_RECEIVED, ["+.01 < P. 1:11(10) ack 1 win 1000", "+0   > . 1:1(0) ack 11",
                       "+0   accept(3, ..., ...) = 4", "+0   read(4, ..., 100) = 10"])
    c["syn-received-fin"] = (
        "SYN-RECEIVED: the handshake's ACK with FIN: ESTABLISHED then CLOSE-WAIT",
        SYN_RECEIVED, ["+.01 < F. 1:1(0) ack 1 win 1000", "+0~+.006 > . 1:1(0) ack 2",
                       "+0   accept(3, ..., ...) = 4", "+0   read(4, ..., 100) = 0"])
    c["syn-received-rst-in-window"] = (
        "SYN-RECEIVED (passive): a RST inside the window but not at RCV.NXT draws a challenge ACK "
        "(RFC 5961 3.2, RFC 9293 3.10.7.4 second); the half-open connection stays",
        SYN_RECEIVED, ["+.01 < R 100:100(0) win 0", "+0   > . 1:1(0) ack 1", *accept])
    c["syn-received-synack"] = (
        "SYN-RECEIVED (passive): a SYN-ACK from the peer: Linux answers <SEQ=SEG.ACK><CTL=RST> and "
        "drops the half-open connection",
        SYN_RECEIVED, ["+.01 < S. 100:100(0) ack 1 win 65535 <mss 1460,nop,wscale 7>", "+0   > R 1:1(0)",
                       "+.01 < . 1:1(0) ack 1 win 1000", "+0   > R 1:1(0)"])
    return c


def write(name: str, what: str, how: str, preamble: str, lines: list[str]) -> None:
    header = [f"// State x event: {what}."]
    if how:
        header.append(f"// The state is reached by: {how}.")
    dev = DEVIATIONS.get(tuple(name.split("--", 1)) if "--" in name else (name, ""))  # type: ignore[arg-type]
    if dev:
        header.insert(0, f"// tcpstack-deviation: {dev}")
    header.append("// Generated by tests/script/gen_state_cells.py; edit the generator, not this file.")
    body = "\n".join("\n".join(textwrap.wrap(h, 100, subsequent_indent="// ")) if not h.startswith("// tcpstack-")
                     else h for h in header)
    text = body + "\n" + preamble + "\n" + "\n".join(lines) + "\n"
    with open(os.path.join(OUT, name + ".pkt"), "w") as f:
        f.write(text)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".pkt"):
            os.remove(os.path.join(OUT, old))
    for state, (pre, r, n, how) in SYNCHRONIZED.items():
        for event, (what, lines) in events(state, r, n).items():
            write(f"{state}--{event}", f"{state.upper()} + {what}", how, pre, lines)
    for name, (what, pre, lines) in other_cells().items():
        write(name, what, "", pre, lines)


if __name__ == "__main__":
    main()
