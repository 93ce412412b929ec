"""The eleven states of RFC 9293 §3.3.2 and the one table of legal transitions.

Every state change in the engine goes through ``Connection.set_state``, which
checks the change against ``TRANSITIONS`` and emits the trace event.  The
state diagram in docs/ is generated from this table (``make diagram``), so
picture and code cannot drift.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value


S = State

# States in which both sides' ISNs are known (RFC 9293 §3.10.7.4 "synchronized").
SYNCHRONIZED = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
# States in which we may still send new data.
CAN_SEND = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})
# States in which received text is delivered to the user (§3.10.7.4, seventh).
CAN_RECEIVE = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})

# (from, to, event) — RFC 9293 Figure 5 plus the transitions the event
# processing of §3.10 adds (RST, timeouts, user ABORT).
TRANSITIONS: list[tuple[State, State, str]] = [
    (S.CLOSED, S.LISTEN, "passive OPEN"),
    (S.CLOSED, S.SYN_SENT, "active OPEN / snd SYN"),
    (S.LISTEN, S.SYN_RECEIVED, "rcv SYN / snd SYN,ACK"),
    (S.LISTEN, S.CLOSED, "CLOSE"),
    (S.SYN_SENT, S.SYN_RECEIVED, "rcv SYN (simultaneous open) / snd SYN,ACK"),
    (S.SYN_SENT, S.ESTABLISHED, "rcv SYN,ACK / snd ACK"),
    (S.SYN_SENT, S.CLOSED, "CLOSE, rcv RST, or SYN retries exhausted"),
    (S.SYN_RECEIVED, S.ESTABLISHED, "rcv ACK of SYN"),
    (S.SYN_RECEIVED, S.FIN_WAIT_1, "CLOSE / snd FIN"),
    (S.SYN_RECEIVED, S.CLOSED, "rcv RST, ABORT, or SYN,ACK retries exhausted"),
    (S.ESTABLISHED, S.FIN_WAIT_1, "CLOSE / snd FIN"),
    (S.ESTABLISHED, S.CLOSE_WAIT, "rcv FIN / snd ACK"),
    (S.ESTABLISHED, S.CLOSED, "rcv RST, ABORT, or retransmissions exhausted"),
    (S.FIN_WAIT_1, S.FIN_WAIT_2, "rcv ACK of FIN"),
    (S.FIN_WAIT_1, S.CLOSING, "rcv FIN / snd ACK"),
    (S.FIN_WAIT_1, S.TIME_WAIT, "rcv FIN and ACK of FIN / snd ACK"),
    (S.FIN_WAIT_1, S.CLOSED, "rcv RST, ABORT, or retransmissions exhausted"),
    (S.FIN_WAIT_2, S.TIME_WAIT, "rcv FIN / snd ACK"),
    (S.FIN_WAIT_2, S.CLOSED, "rcv RST, ABORT, or tcp_fin_timeout of an orphan"),
    (S.CLOSE_WAIT, S.LAST_ACK, "CLOSE / snd FIN"),
    (S.CLOSE_WAIT, S.CLOSED, "rcv RST, ABORT, or retransmissions exhausted"),
    (S.CLOSING, S.TIME_WAIT, "rcv ACK of FIN"),
    (S.CLOSING, S.CLOSED, "rcv RST, ABORT, or retransmissions exhausted"),
    (S.LAST_ACK, S.CLOSED, "rcv ACK of FIN, rcv RST, or retransmissions exhausted"),
    (S.TIME_WAIT, S.CLOSED, "2 MSL timeout (or RST when tcp_rfc1337=0)"),
]

LEGAL: frozenset[tuple[State, State]] = frozenset((a, b) for a, b, _ in TRANSITIONS)


def dot_diagram() -> str:
    """The state machine as Graphviz dot, generated from TRANSITIONS."""
    lines = ["digraph tcp {", "  rankdir=TB;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
    for a, b, ev in TRANSITIONS:
        lines.append(f'  "{a.value}" -> "{b.value}" [label="{ev}", fontsize=9];')
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # `make diagram`
    import sys

    sys.stdout.write(dot_diagram())
