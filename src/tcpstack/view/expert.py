"""Expert information about a TCP conversation, as Wireshark's TCP analysis gives it.

A passive observer can say a lot about a conversation from its segments
alone: this segment repeats bytes already sent (a retransmission), that ACK
acknowledges nothing new with an unchanged window (a duplicate ACK), this
receiver has closed its window (zero window).  This module computes those
notes for a list of ``(time_us, direction, Segment)`` tuples -- the neutral
form every view in ``tcpstack.view`` takes -- using the same tests, in the
same order, as Wireshark's ``tcp_analyze_sequence_number()``
(epan/dissectors/packet-tcp.c), so the notes match what a user sees there:

- *zero window probe*: one byte at the next sequence number while the peer
  advertises a zero window;
- *zero window*: a segment (not SYN, FIN or RST) advertising window 0;
- *previous segment not captured*: the sequence number jumps past the next
  expected one;
- *keep-alive*: at most one byte at next-sequence-number minus one;
- *window update*: no data, same seq and ack, only the window changed;
- *window full*: the segment fills the peer's advertised window exactly;
- *keep-alive ACK* / *zero window probe ACK*: the answers to those probes;
- *duplicate ACK #n*: no data, same seq, ack and window as the last ACK;
- *ACKed unseen segment*: acknowledges bytes the capture never showed;
- *retransmission* (and its kinds *fast*, *spurious*) or *out-of-order*: a
  segment with data, SYN or FIN that does not advance the sequence number;
- *RST*: the connection was reset.

``direction`` is 0 or 1: which end sent the segment.
Window sizes are scaled when both SYNs carried a window scale option
(RFC 7323 §2.3: the SYN's own window is never scaled); when the handshake
is not in the capture the scale is unknown and "window full" is not judged,
as in Wireshark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..tcp.seq import add, ge, gt, le, lt
from ..wire.tcp import ACK, FIN, RST, SYN, Segment

__all__ = ["Expert", "analyze", "KINDS", "summary"]

# kind -> Wireshark's severity for it (chat < note < warning < error).
KINDS: dict[str, str] = {
    "retransmission": "note",
    "fast-retransmission": "note",
    "spurious-retransmission": "note",
    "out-of-order": "warning",
    "previous-segment-not-captured": "warning",
    "acked-unseen-segment": "warning",
    "duplicate-ack": "note",
    "zero-window": "warning",
    "zero-window-probe": "note",
    "zero-window-probe-ack": "note",
    "window-full": "warning",
    "window-update": "chat",
    "keep-alive": "note",
    "keep-alive-ack": "note",
    "rst": "warning",
}

# Wireshark's thresholds: a retransmission within 20 ms of the second
# duplicate ACK is "fast"; without an RTT from the handshake, a segment that
# fills a hole within 3 ms of the highest one is "out-of-order".
_FAST_RETRANS_US = 20_000
_OOO_DEFAULT_US = 3_000


@dataclass(frozen=True, slots=True)
class Expert:
    """One note about one segment."""

    kind: str  # a key of KINDS
    text: str  # for people: "dup ACK #2 of frame 14"

    @property
    def severity(self) -> str:
        return KINDS[self.kind]

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "severity": self.severity, "text": self.text}


class _Flow:
    """What the observer knows about one direction (Wireshark's tcp_flow_t)."""

    __slots__ = (
        "nextseq",
        "nextseq_time",
        "maxseqtobeacked",
        "lastack",
        "lastack_time",
        "window",
        "window_seen",
        "wscale",
        "dupacks",
        "lastnondupack",
        "last_flags",
    )

    def __init__(self) -> None:
        self.nextseq: int | None = None  # highest seq + SEG.LEN seen
        self.nextseq_time = 0
        self.maxseqtobeacked: int | None = None
        self.lastack: int | None = None
        self.lastack_time = 0
        self.window = 0  # scaled, as last advertised
        self.window_seen = False
        self.wscale: int | None = None  # None: not seen in a SYN
        self.dupacks = 0
        self.lastnondupack = 0  # frame of the ACK the dup ACKs repeat
        self.last_flags: frozenset[str] = frozenset()


def _scales(segments: Sequence[tuple[int, int, Segment]]) -> dict[int, int] | None:
    """Window shift per direction, or None when the handshake is not in the capture.

    RFC 7323 §2.2: scaling is in effect only if both SYNs carried the option;
    otherwise both shifts are 0.
    """
    offered: dict[int, int | None] = {}
    for _t, d, seg in segments:
        if seg.flags & SYN and d not in offered:
            offered[d] = seg.wscale
        if len(offered) == 2:
            break
    if len(offered) < 2:
        return None
    if any(v is None for v in offered.values()):
        return {d: 0 for d in offered}
    return {d: min(v or 0, 14) for d, v in offered.items()}  # RFC 7323 §2.3: at most 14


def analyze(
    segments: Sequence[tuple[int, int, Segment]],
    frames: Sequence[int] | None = None,
    rtt_us: int | None = None,
) -> list[tuple[Expert, ...]]:
    """Notes for each segment of one connection, in the order given.

    ``frames`` are the packet numbers used in texts ("of frame 14"); by
    default the 1-based positions in ``segments``.  ``rtt_us`` is the
    handshake RTT used to tell out-of-order from retransmission (3 ms when
    unknown, as Wireshark does).
    """
    if frames is None:
        frames = range(1, len(segments) + 1)
    scales = _scales(segments)
    flows = (_Flow(), _Flow())
    ooo_thres = rtt_us if rtt_us else _OOO_DEFAULT_US
    out: list[tuple[Expert, ...]] = []
    for (t, d, seg), frame in zip(segments, frames, strict=True):
        if d not in (0, 1):
            raise ValueError(f"direction must be 0 or 1, got {d!r}")
        fwd, rev = flows[d], flows[1 - d]
        notes: list[Expert] = []
        flags = seg.flags
        seq, ack = seg.seq, seg.ack
        seglen = len(seg.payload)
        shift = scales.get(d, 0) if scales is not None else 0
        # RFC 7323 §2.3: "The window field in a segment where the SYN bit is
        # set ... MUST NOT be scaled."
        window = seg.window if flags & SYN else seg.window << shift
        no_ctl = not flags & (SYN | FIN | RST)

        finished = False
        # ZERO WINDOW PROBE: one byte at the next sequence number into a closed window.
        if (
            seglen == 1
            and fwd.nextseq is not None
            and seq == fwd.nextseq
            and rev.window_seen
            and rev.window == 0
        ):
            notes.append(Expert("zero-window-probe", "zero window probe"))
            finished = True
        if not finished:
            # ZERO WINDOW: the receiver of this segment's peer must stop sending.
            if seg.window == 0 and no_ctl:
                notes.append(Expert("zero-window", "zero window"))
            # LOST PACKET: bytes before this one are missing from the capture.
            if fwd.nextseq is not None and gt(seq, fwd.nextseq) and not flags & RST:
                notes.append(Expert("previous-segment-not-captured", "previous segment not captured"))
            # KEEP ALIVE: 0 or 1 byte at SND.NXT - 1 (RFC 9293 §3.8.4).
            if (
                seglen <= 1
                and no_ctl
                and fwd.nextseq is not None
                and add(fwd.nextseq, -1) == seq
            ):
                notes.append(Expert("keep-alive", "keep-alive"))
            # WINDOW UPDATE: nothing new but the window.
            if (
                seglen == 0
                and window
                and fwd.window_seen
                and window != fwd.window
                and seq == fwd.nextseq
                and ack == fwd.lastack
                and no_ctl
            ):
                notes.append(Expert("window-update", "window update"))
            # WINDOW FULL: this segment fills the window the peer offered.
            if (
                seglen > 0
                and scales is not None
                and rev.lastack is not None
                and rev.window_seen
                and add(seq, seglen) == add(rev.lastack, rev.window)
                and no_ctl
            ):
                notes.append(Expert("window-full", "window full"))
            same_ack = (
                seglen == 0
                and fwd.window_seen
                and window == fwd.window
                and seq == fwd.nextseq
                and ack == fwd.lastack
                and no_ctl
            )
            # KEEP ALIVE ACK / ZERO WINDOW PROBE ACK: answers to the peer's probes.
            if same_ack and "keep-alive" in rev.last_flags:
                notes.append(Expert("keep-alive-ack", "keep-alive ACK"))
                finished = True
            elif same_ack and window == 0 and "zero-window-probe" in rev.last_flags:
                notes.append(Expert("zero-window-probe-ack", "zero window probe ACK"))
                finished = True
            # DUPLICATE ACK: same seq, ack and window, no data (RFC 5681 §2).
            elif same_ack and window:
                fwd.dupacks += 1
                notes.append(Expert("duplicate-ack", f"dup ACK #{fwd.dupacks} of frame {fwd.lastnondupack}"))
        if not _has(notes, "duplicate-ack"):
            fwd.lastnondupack = frame
            fwd.dupacks = 0
        # ACKED LOST PACKET: acknowledges more than the capture showed.
        if (
            flags & ACK
            and rev.maxseqtobeacked is not None
            and gt(ack, rev.maxseqtobeacked)
            and not flags & RST
        ):
            notes.append(Expert("acked-unseen-segment", "ACKed segment that wasn't captured"))
        # RETRANSMISSION / FAST RETRANSMISSION / OUT-OF-ORDER.
        seg_len = seg.seg_len
        if (
            (seglen > 0 or flags & (SYN | FIN))
            and fwd.nextseq is not None
            and lt(seq, fwd.nextseq)
            and not _has(notes, "keep-alive")
        ):
            if (
                rev.dupacks >= 2
                and rev.lastack == seq
                and t - rev.lastack_time < _FAST_RETRANS_US
            ):
                notes.append(Expert("fast-retransmission", "fast retransmission"))
            elif t - fwd.nextseq_time < ooo_thres and fwd.nextseq != add(seq, seg_len):
                notes.append(Expert("out-of-order", "out-of-order"))
            elif seglen > 0 and rev.lastack is not None and le(add(seq, seglen), rev.lastack):
                notes.append(Expert("spurious-retransmission", "spurious retransmission"))
            else:
                notes.append(Expert("retransmission", "retransmission"))
        if flags & RST:
            notes.append(Expert("rst", "connection reset (RST)"))

        # Update what we know of this direction.
        if _has(notes, "zero-window-probe"):
            pass  # a probe's byte does not advance the sequence (as in Wireshark)
        elif seg_len or flags & (SYN | FIN):
            end = add(seq, seg_len)
            if fwd.nextseq is None or gt(end, fwd.nextseq):
                fwd.nextseq = end
                fwd.nextseq_time = t
            if fwd.maxseqtobeacked is None or gt(end, fwd.maxseqtobeacked):
                fwd.maxseqtobeacked = end
        elif fwd.nextseq is None:
            fwd.nextseq = seq
            fwd.nextseq_time = t
            fwd.maxseqtobeacked = seq
        if flags & ACK:
            if fwd.lastack is None or (ack != fwd.lastack and ge(ack, fwd.lastack)):
                fwd.lastack = ack
                fwd.lastack_time = t
            # The peer has acknowledged this much, so it must have existed.
            if rev.maxseqtobeacked is None or gt(ack, rev.maxseqtobeacked):
                rev.maxseqtobeacked = ack
        if not flags & RST:
            fwd.window = window
            fwd.window_seen = True
        fwd.last_flags = frozenset(n.kind for n in notes)
        out.append(tuple(notes))
    return out


def _has(notes: list[Expert], kind: str) -> bool:
    return any(n.kind == kind for n in notes)


def summary(notes: Sequence[Sequence[Expert]]) -> dict[str, int]:
    """Counts per kind, in KINDS order, only the kinds that occurred."""
    counts: dict[str, int] = {}
    for per_seg in notes:
        for n in per_seg:
            counts[n.kind] = counts.get(n.kind, 0) + 1
    return {k: counts[k] for k in KINDS if k in counts}
