"""Names a script may use for numbers: Linux's values (x86-64 and arm64 agree
on all of these), fixed here so a script means the same on every host."""

from __future__ import annotations

import errno as _errno

SYMBOLS: dict[str, int] = {
    # socket(2)
    "AF_INET": 2, "AF_INET6": 10, "AF_UNSPEC": 0, "PF_INET": 2, "PF_INET6": 10,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3, "SOCK_NONBLOCK": 0o4000, "SOCK_CLOEXEC": 0o2000000,
    "IPPROTO_IP": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_IPV6": 41,
    # levels and options
    "SOL_SOCKET": 1, "SOL_TCP": 6, "SOL_IP": 0,
    "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5,
    "SO_BROADCAST": 6, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9, "SO_OOBINLINE": 10,
    "SO_LINGER": 13, "SO_REUSEPORT": 15, "SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19,
    "SO_RCVTIMEO": 20, "SO_SNDTIMEO": 21, "SO_ACCEPTCONN": 30, "SO_PROTOCOL": 38, "SO_DOMAIN": 39,
    "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_KEEPCNT": 6, "TCP_SYNCNT": 7, "TCP_LINGER2": 8, "TCP_DEFER_ACCEPT": 9,
    "TCP_WINDOW_CLAMP": 10, "TCP_INFO": 11, "TCP_QUICKACK": 12, "TCP_CONGESTION": 13,
    "TCP_USER_TIMEOUT": 18, "TCP_NOTSENT_LOWAT": 25,
    # fcntl(2)
    "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4, "FD_CLOEXEC": 1,
    "O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0o4000,
    # shutdown(2)
    "SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2,
    # poll(2)
    "POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10,
    "POLLNVAL": 0x20, "POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100,
    "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000,
    # send/recv flags
    "MSG_OOB": 0x1, "MSG_PEEK": 0x2, "MSG_DONTROUTE": 0x4, "MSG_TRUNC": 0x20, "MSG_DONTWAIT": 0x40,
    "MSG_EOR": 0x80, "MSG_WAITALL": 0x100, "MSG_NOSIGNAL": 0x4000, "MSG_MORE": 0x8000,
    # tcp_info: tcpi_state (include/net/tcp_states.h) and tcpi_ca_state
    "TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
    "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8,
    "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11,
    "TCP_CA_Open": 0, "TCP_CA_Disorder": 1, "TCP_CA_CWR": 2, "TCP_CA_Recovery": 3, "TCP_CA_Loss": 4,
    "TCPI_OPT_TIMESTAMPS": 1, "TCPI_OPT_SACK": 2, "TCPI_OPT_WSCALE": 4, "TCPI_OPT_ECN": 8,
    "NULL": 0,
}

# RFC 9293 state names (tcpstack) -> Linux's tcpi_state numbers.
STATE_NUMBERS = {
    "ESTABLISHED": 1, "SYN-SENT": 2, "SYN-RECEIVED": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
    "TIME-WAIT": 6, "CLOSED": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11,
}
CA_STATE_NUMBERS = {"open": 0, "disorder": 1, "cwr": 2, "recovery": 3, "loss": 4}


def errno_value(name: str) -> int | None:
    """EINPROGRESS -> 115 (Linux numbering, from the errno module on Linux)."""
    v = getattr(_errno, name, None)
    return v if isinstance(v, int) else None


def errno_name(value: int) -> str:
    return _errno.errorcode.get(value, str(value))
