"""Crafted conversations for the trace tests: segments built with tcpstack.wire, written with PcapWriter.

A ``Conv`` plays both ends of one connection with sequence numbers relative
to each side's ISN, so a test reads like a ladder:

    cv = Conv()
    cv.handshake()
    cv.c(10, ACK | PSH, 1, 1, data=1000)     # client sends bytes 1..1000
    cv.s(20, ACK, 1, 1001)                    # server ACKs them
    cv.write(path)
"""

from __future__ import annotations

from pathlib import Path

from tcpstack.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from tcpstack.wire.ip import build_ip_tcp
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, Opt, Segment, mss_opt, sack_opt, wscale_opt

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "CLIENT", "SERVER", "Conv"]

CLIENT = ("198.18.0.1", 40000)
SERVER = ("198.18.0.2", 80)


class Conv:
    def __init__(self, isn_c: int = 1000, isn_s: int = 5000, t0_us: int = 1_700_000_000_000_000,
                 client: tuple[str, int] = CLIENT, server: tuple[str, int] = SERVER,
                 wscale: int | None = 7) -> None:
        self.isn = {"c": isn_c, "s": isn_s}
        self.t0 = t0_us
        self.client, self.server = client, server
        self.wscale = wscale
        self.packets: list[tuple[int, bytes]] = []

    def _add(self, who: str, t_ms: float, flags: int, seq: int, ack: int, win: int, data: int | bytes,
             options: tuple[Opt, ...]) -> None:
        me, peer = (self.client, self.server) if who == "c" else (self.server, self.client)
        other = "s" if who == "c" else "c"
        payload = data if isinstance(data, bytes) else bytes(data)
        seg = Segment(me[1], peer[1], (self.isn[who] + seq) & 0xFFFFFFFF,
                      (self.isn[other] + ack) & 0xFFFFFFFF if flags & ACK else 0,
                      flags, win, 0, options, payload)
        ident = len(self.packets) + 1
        self.packets.append((self.t0 + int(t_ms * 1000), build_ip_tcp(me[0], peer[0], seg, ident=ident)))

    def c(self, t_ms: float, flags: int, seq: int, ack: int = 0, win: int = 512, data: int | bytes = 0,
          options: tuple[Opt, ...] = ()) -> None:
        """A segment from the client; seq/ack relative to the client's/server's ISN."""
        self._add("c", t_ms, flags, seq, ack, win, data, options)

    def s(self, t_ms: float, flags: int, seq: int, ack: int = 0, win: int = 512, data: int | bytes = 0,
          options: tuple[Opt, ...] = ()) -> None:
        """A segment from the server."""
        self._add("s", t_ms, flags, seq, ack, win, data, options)

    def syn_options(self) -> tuple[Opt, ...]:
        opts: tuple[Opt, ...] = (mss_opt(1460),)
        if self.wscale is not None:
            opts += (wscale_opt(self.wscale),)
        return opts

    def handshake(self, t_ms: float = 0.0, rtt_ms: float = 10.0) -> None:
        self.c(t_ms, SYN, 0, win=64240, options=self.syn_options())
        self.s(t_ms + rtt_ms, SYN | ACK, 0, 1, win=65160, options=self.syn_options())
        self.c(t_ms + rtt_ms, ACK, 1, 1)

    def write(self, path: str | Path, linktype: int = LINKTYPE_RAW) -> Path:
        with PcapWriter(path, linktype=linktype) as w:
            for t, pkt in self.packets:
                if linktype == LINKTYPE_ETHERNET:
                    pkt = bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + pkt
                w.write(t, pkt)
        return Path(path)


def sack(cv: Conv, *blocks: tuple[int, int]) -> tuple[Opt, ...]:
    """A SACK option for client bytes given relative to the client's ISN."""
    base = cv.isn["c"]
    return (sack_opt(tuple(((base + a) & 0xFFFFFFFF, (base + b) & 0xFFFFFFFF) for a, b in blocks)),)
