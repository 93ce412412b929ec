"""SYN cookies (RFC 4987 §3.6), with Linux's encoding (net/ipv4/syncookies.c).

When the SYN queue is full (tcp_syncookies=1) or always (tcp_syncookies=2)
the listener keeps no state for a SYN at all: the SYN-ACK's ISN *is* the
state, a keyed hash of the 4-tuple and the client's ISN with two small values
folded in, and the connection is rebuilt from the ACK that returns it.

The ISN (Linux's secure_tcp_syn_cookie)::

    cookie = H0(4-tuple) + SEG.SEQ + (count << 24) + ((H1(4-tuple, count) + mss_index) mod 2^24)

* ``count`` is a clock that ticks every 60 seconds (Linux's
  TCP_SYNCOOKIE_PERIOD = 60*HZ); its low 8 bits ride in the top byte of the
  cookie, and a cookie is accepted while ``count`` has advanced by less than
  MAX_SYNCOOKIE_AGE = 2, i.e. for 60 to 120 seconds.
* ``mss_index`` picks the client's MSS from a table of four common values
  (Linux's msstab), rounded down -- all of the SYN's MSS that survives.
* H0 and H1 are keyed hashes (Linux: SipHash with two boot-time secrets;
  here keyed BLAKE2b with keys derived from the stack's secret).

Validating an ACK: subtract H0 + SEG.SEQ - 1 from SEG.ACK - 1, check the
age byte, subtract H1 for that count: what is left must be a table index
(0..3).  A forged ACK passes only if the top byte lands on one of two counts
and the low 24 bits on one of four values: about 2/256 * 4/2^24, one in 500
million per try.

Timestamps (Linux's cookie_init_timestamp / cookie_timestamp_decode): the
options a cookie cannot carry -- window scale, SACK-permitted, ECN -- are
written into the low 6 bits of the SYN-ACK's TSval, which the client echoes
in every TSecr::

    | 31 .. 6 timestamp | 5 ECN | 4 SACK | 3..0 wscale (15 = none) |

The TSval is rounded *down* so that later timestamps never go backwards.
Without timestamps a cookie connection has no window scaling and no SACK
(the SYN-ACK then offers neither, as Linux's does).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

Key = tuple[str, int, str, int]

COOKIEBITS = 24  # low bits: hash + MSS index; high 8 bits: the counter
COOKIEMASK = (1 << COOKIEBITS) - 1
PERIOD_US = 60 * 1_000_000  # Linux TCP_SYNCOOKIE_PERIOD (60 * HZ)
MAX_AGE = 2  # Linux MAX_SYNCOOKIE_AGE: accept counts now and now - 1
VALID_US = MAX_AGE * PERIOD_US  # Linux TCP_SYNCOOKIE_VALID: listeners check ACKs this long after a cookie
# Linux's msstab (IPv4: 536, 1300, 1440 for PPPoE, 1460 for Ethernet) and its IPv6 table.
MSSTAB4 = (536, 1300, 1440, 1460)
MSSTAB6 = (1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60)

TSBITS = 6
TSMASK = (1 << TSBITS) - 1
TS_OPT_WSCALE_MASK = 0xF  # 0xF (an invalid shift) means: no window scaling
TS_OPT_SACK = 1 << 4
TS_OPT_ECN = 1 << 5
MAX_WSCALE = 14


class CookieOptions(NamedTuple):
    """What the echoed TSecr of a cookie ACK says the SYN had asked for."""

    wscale: int | None  # the client's shift, None without window scaling
    sack: bool
    ecn: bool


def msstab(remote: str) -> tuple[int, ...]:
    return MSSTAB6 if ":" in remote else MSSTAB4


def mss_index(mss: int, table: tuple[int, ...]) -> int:
    """The largest table entry not above ``mss`` (entry 0 if all are)."""
    for i in range(len(table) - 1, 0, -1):
        if mss >= table[i]:
            return i
    return 0


def encode_ts(ts_now: int, opts: CookieOptions) -> int:
    """A TSval at or just below ``ts_now`` (ms) whose low 6 bits carry ``opts``
    (Linux's cookie_init_timestamp).  The caller adds the connection's offset."""
    bits = TS_OPT_WSCALE_MASK if opts.wscale is None else min(opts.wscale, MAX_WSCALE)
    if opts.sack:
        bits |= TS_OPT_SACK
    if opts.ecn:
        bits |= TS_OPT_ECN
    ts = (ts_now >> TSBITS) << TSBITS | bits
    if ts > ts_now:
        ts -= 1 << TSBITS
    return ts


def decode_ts(tsecr: int) -> CookieOptions:
    """The options in an echoed cookie TSval (offset already removed)."""
    ws = tsecr & TS_OPT_WSCALE_MASK
    return CookieOptions(
        None if ws == TS_OPT_WSCALE_MASK else ws, bool(tsecr & TS_OPT_SACK), bool(tsecr & TS_OPT_ECN)
    )


class SynCookies:
    """Cookie generation and validation for one stack (one secret)."""

    def __init__(self, secret: bytes) -> None:
        # Two independent keys, as Linux's syncookie_secret[2].
        k0 = hashlib.blake2b(secret, person=b"syncookie0", digest_size=32).digest()
        k1 = hashlib.blake2b(secret, person=b"syncookie1", digest_size=32).digest()
        self._h0 = hashlib.blake2b(key=k0, digest_size=4)
        self._h1 = hashlib.blake2b(key=k1, digest_size=4)

    @staticmethod
    def counter(now: int) -> int:
        """Linux's tcp_cookie_time(): minutes of the clock."""
        return now // PERIOD_US

    def _hash(self, which: int, key: Key, count: int) -> int:
        h = (self._h1 if which else self._h0).copy()
        h.update(f"{key[0]} {key[1]} {key[2]} {key[3]} {count}".encode())
        return int.from_bytes(h.digest(), "big")

    def make(self, key: Key, sseq: int, mss: int, now: int) -> tuple[int, int]:
        """The ISN for a SYN with sequence number ``sseq`` on ``key`` (local addr,
        local port, remote addr, remote port) and the MSS the cookie encodes."""
        table = msstab(key[2])
        idx = mss_index(mss, table)
        count = self.counter(now)
        cookie = (
            self._hash(0, key, 0) + sseq + (count << COOKIEBITS)
            + ((self._hash(1, key, count) + idx) & COOKIEMASK)
        )
        return cookie & 0xFFFFFFFF, table[idx]

    def check(self, key: Key, sseq: int, cookie: int, now: int) -> int:
        """The MSS a cookie encodes, or 0 if it is not one of ours or too old.
        ``sseq`` is the client's ISN (SEG.SEQ - 1 of the ACK), ``cookie`` our
        ISN (SEG.ACK - 1)."""
        count = self.counter(now)
        c = (cookie - self._hash(0, key, 0) - sseq) & 0xFFFFFFFF
        diff = (count - (c >> COOKIEBITS)) & 0xFF
        if diff >= MAX_AGE:
            return 0
        idx = (c - self._hash(1, key, count - diff)) & COOKIEMASK
        table = msstab(key[2])
        return table[idx] if idx < len(table) else 0
