"""What an ICMP error means to TCP (RFC 9293 §3.9.2.2, RFC 1122 §4.2.3.9).

``classify`` turns a parsed ``IcmpMessage`` into one of three effects, as
Linux's ``tcp_v4_err``/``tcp_v6_err`` do (net/ipv4/tcp_ipv4.c,
net/ipv6/tcp_ipv6.c) with the errno tables of ``icmp_err_convert``
(net/ipv4/icmp.c) and ``icmpv6_err_convert`` (net/ipv6/icmp.c):

* ``PMTU``: fragmentation needed (ICMPv4 3/4, RFC 1191) or Packet Too Big
  (ICMPv6 2, RFC 8201): the path MTU shrinks.
* ``ERROR`` with an errno: destination unreachable, time exceeded, parameter
  problem.  The connection aborts with it in SYN-SENT (and a simultaneous
  open's SYN-RECEIVED); synchronized connections only record it as the
  "soft error" reported if they later time out (``apply_to``).
* ``IGNORE``: source quench (RFC 9293 MUST-55, RFC 6633: silently discarded),
  redirects (routing, not TCP), destination-unreachable codes above 15 and
  unknown ICMPv6 error types.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..wire.icmp import (
    ICMP4_DEST_UNREACH,
    ICMP4_PARAMETER_PROBLEM,
    ICMP4_TIME_EXCEEDED,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAMETER_PROBLEM,
    ICMP6_TIME_EXCEEDED,
    IcmpMessage,
)
from . import events as ev
from . import seq
from .state import State as S

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["ERROR", "IGNORE", "IPV4_MIN_PMTU", "IPV6_MIN_MTU", "PMTU", "apply_to", "classify", "request_abort"]

IGNORE, ERROR, PMTU = 0, 1, 2

# Linux's net.ipv4.route.min_pmtu (ip_rt_min_pmtu = 512 + 20 + 20): a smaller
# reported MTU is raised to it (__ip_rt_update_pmtu).  RFC 1191 §3 only asks
# for at least 68; Linux's floor keeps an attacker from forcing tiny segments.
IPV4_MIN_PMTU = 552
# RFC 8200 §5: every IPv6 link carries 1280; tcp_v6_err ignores a smaller MTU.
IPV6_MIN_MTU = 1280

# icmp_err_convert[]: destination unreachable code -> errno (codes 0..15).
_UNREACH4 = (
    errno.ENETUNREACH,  # 0 network unreachable
    errno.EHOSTUNREACH,  # 1 host unreachable
    errno.ENOPROTOOPT,  # 2 protocol unreachable
    errno.ECONNREFUSED,  # 3 port unreachable
    errno.EMSGSIZE,  # 4 fragmentation needed (handled as PMTU)
    errno.EOPNOTSUPP,  # 5 source route failed
    errno.ENETUNREACH,  # 6 destination network unknown
    errno.EHOSTDOWN,  # 7 destination host unknown
    errno.ENONET,  # 8 source host isolated
    errno.ENETUNREACH,  # 9 network administratively prohibited
    errno.EHOSTUNREACH,  # 10 host administratively prohibited
    errno.ENETUNREACH,  # 11 network unreachable for TOS
    errno.EHOSTUNREACH,  # 12 host unreachable for TOS
    errno.EHOSTUNREACH,  # 13 communication administratively prohibited
    errno.EHOSTUNREACH,  # 14 host precedence violation
    errno.EHOSTUNREACH,  # 15 precedence cutoff in effect
)
# icmpv6_err_convert()'s tab_unreach[]: codes 0..6; others EPROTO.
_UNREACH6 = (
    errno.ENETUNREACH,  # 0 no route to destination
    errno.EACCES,  # 1 administratively prohibited
    errno.EHOSTUNREACH,  # 2 beyond scope of source address
    errno.EHOSTUNREACH,  # 3 address unreachable
    errno.ECONNREFUSED,  # 4 port unreachable
    errno.EACCES,  # 5 source address failed ingress/egress policy
    errno.EACCES,  # 6 reject route to destination
)


def classify(msg: IcmpMessage) -> tuple[int, int]:
    """(effect, errno) for an ICMP error about one of our TCP segments."""
    t, c = msg.type, msg.code
    if msg.version == 4:
        if t == ICMP4_DEST_UNREACH:
            if c == 4:
                return PMTU, errno.EMSGSIZE
            if c < len(_UNREACH4):
                return ERROR, _UNREACH4[c]
            return IGNORE, 0  # tcp_v4_err: code > NR_ICMP_UNREACH
        if t == ICMP4_TIME_EXCEEDED:
            return ERROR, errno.EHOSTUNREACH
        if t == ICMP4_PARAMETER_PROBLEM:
            return ERROR, errno.EPROTO
        return IGNORE, 0  # source quench, redirect
    if t == ICMP6_PACKET_TOO_BIG:
        return PMTU, errno.EMSGSIZE
    if t == ICMP6_DEST_UNREACH:
        return ERROR, _UNREACH6[c] if c < len(_UNREACH6) else errno.EPROTO
    if t == ICMP6_TIME_EXCEEDED:
        return ERROR, errno.EHOSTUNREACH
    if t == ICMP6_PARAMETER_PROBLEM:
        return ERROR, errno.EPROTO
    return IGNORE, 0


def request_abort(msg: IcmpMessage) -> bool:
    """Does this error drop a half-open request (SYN-RECEIVED)?  Linux's
    tcp_req_err() ``abort`` argument: for ICMPv4 parameter problem, time
    exceeded, network or host unreachable (tcp_v4_err); for ICMPv6 the
    ``fatal`` flag of icmpv6_err_convert() (tcp_v6_err)."""
    t, c = msg.type, msg.code
    if msg.version == 4:
        return t in (ICMP4_PARAMETER_PROBLEM, ICMP4_TIME_EXCEEDED) or (t == ICMP4_DEST_UNREACH and c in (0, 1))
    if t == ICMP6_DEST_UNREACH:
        return c not in (0, 2, 3)
    return t == ICMP6_PARAMETER_PROBLEM


def apply_to(conn: Connection, msg: IcmpMessage, effect: int, err: int, now: int) -> None:
    """An ICMP error quoting one of our segments; ``effect``/``err`` come from
    ``classify``.  RFC 5927 §4.1 (Linux: OutOfWindowIcmps): the quoted
    sequence number must lie in SND.UNA..SND.NXT, else the message is
    dropped -- a blind attacker has to guess it.  Then:

    * fragmentation needed / Packet Too Big (RFC 1191, RFC 8201): the
      path MTU drops (never below Linux's floors: IPv4 min_pmtu 552, an
      IPv6 MTU under 1280 is ignored) and what was sent at the old size
      is resent at the new one (Linux: tcp_simple_retransmit, no cwnd
      reduction beyond the MSS change);
    * in SYN-SENT and SYN-RECEIVED a destination unreachable, time
      exceeded or parameter problem aborts the attempt with its errno
      (Linux; RFC 5461 §4 describes this common deviation from
      MUST-56);
    * in synchronized states it is a soft error (MUST-56: never an
      abort), kept until SND.UNA advances and reported instead of
      ETIMEDOUT if the connection times out (SHLD-25), and by SO_ERROR.
    """
    st = conn.state
    if st is S.CLOSED or st is S.TIME_WAIT:
        return
    stack = conn.stack
    q = msg.orig_seq
    if not (seq.le(conn.snd_una, q) and seq.le(q, conn.snd_nxt)):
        stack.mib.OutOfWindowIcmps += 1
        stack._emit(now, conn, ev.DROP, f"ICMP {msg.type}/{msg.code} quotes seq {q} outside SND.UNA..SND.NXT")
        return
    if effect == PMTU:
        if st is S.SYN_SENT or st is S.SYN_RECEIVED:
            return  # our SYN fits any legal MTU; options are not agreed yet
        mtu, v6 = msg.mtu, ":" in conn.remote_addr
        if v6 and mtu < IPV6_MIN_MTU:
            stack._emit(now, conn, ev.DROP, f"ICMPv6 Packet Too Big with MTU {mtu} < 1280 ignored")
            return
        if not v6 and mtu < IPV4_MIN_PMTU:
            mtu = IPV4_MIN_PMTU
            conn.soft_error = (conn.snd_una, OSError(err, os.strerror(err)))
        if mtu >= conn.pmtu:
            return  # ICMP only ever lowers the path MTU (RFC 1191 §3, RFC 8201 §4)
        conn.pmtu = mtu
        mss = max(mtu - (60 if v6 else 40), conn.config.tcp_min_snd_mss)
        stack._emit(now, conn, ev.INFO, f"path MTU {mtu} (ICMP from {msg.src}): MSS {conn.snd_mss} -> {min(mss, conn.snd_mss)}")
        old = conn.snd_mss
        if mss >= old:
            return
        conn.snd_mss = mss
        cc = conn.cc
        cc.mss = mss
        cc.cwnd = max(cc.cwnd * mss // old, mss)  # same number of segments, as Linux counts cwnd
        if seq.lt(conn.snd_una, conn.snd_nxt):
            # Resend the flight at the new size (Linux: tcp_simple_retransmit).
            conn.in_recovery = False
            conn.dupacks = 0
            conn.recover = conn.snd_nxt
            conn.rtx_nxt = conn.snd_una
            conn._push(now)
            conn._rearm()
        return
    if effect != ERROR:
        stack._emit(now, conn, ev.DROP, f"ICMP {msg.type}/{msg.code} ignored")
        return
    exc = OSError(err, f"{os.strerror(err)} (ICMP type {msg.type} code {msg.code} from {msg.src})")
    if st is S.SYN_SENT or st is S.SYN_RECEIVED:
        conn._fail(exc, now)
        return
    conn.soft_error = (conn.snd_una, exc)
    stack._emit(now, conn, ev.INFO, f"ICMP soft error: {exc.strerror}")
