"""The namespace's kernel as a router: forwarding on, and a second namespace
behind it (``far_namespace``), reached over a veth pair, so that our packets
cross one forwarding hop (ICMP errors from a router, path MTU, TTL expiry).

Addresses: 198.19.1.0/24 and fd00:198:19:1::/64 between the two namespaces
(inside 198.18.0.0/15 and a unique-local prefix; nothing leaves the namespaces).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from .kernel_peer import in_ns

NET4, NEAR4, FAR4 = "198.19.1.0/24", "198.19.1.1", "198.19.1.2"
NET6, NEAR6, FAR6 = "fd00:198:19:1::/64", "fd00:198:19:1::1", "fd00:198:19:1::2"


def ip(*args: str) -> None:
    """Run ``ip`` with ``args``; fail the test with its message if it fails."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"


def forwarding(ns: str) -> None:
    """Turn IPv4 and IPv6 forwarding on in namespace ``ns``."""
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        r = in_ns(ns, "sysctl", "-qw", key, timeout=20)
        assert r.returncode == 0, f"sysctl {key}: {r.stderr}"


@contextmanager
def far_namespace(ns: str, *, mtu: int | None = None) -> Iterator[str]:
    """A namespace behind ``ns`` (named ``ns`` + "-far", yielded; removed on exit) at
    FAR4/FAR6, which ``ns``'s kernel forwards to from NEAR4/NEAR6.  With ``mtu``,
    the route towards it has that MTU while both links stay at 1500, so forwarding
    is what meets the smaller MTU (ip_dst_mtu_maybe_forward)."""
    far = ns + "-far"
    ip("netns", "add", far)
    try:
        ip("-n", ns, "link", "add", "vnear", "type", "veth", "peer", "name", "vfar", "netns", far)
        ip("-n", ns, "addr", "add", f"{NEAR4}/24", "dev", "vnear")
        ip("-n", ns, "addr", "add", f"{NEAR6}/64", "dev", "vnear", "nodad")
        ip("-n", ns, "link", "set", "vnear", "up")
        if mtu is not None:
            ip("-n", ns, "route", "replace", NET4, "dev", "vnear", "mtu", str(mtu))
            ip("-n", ns, "-6", "route", "replace", NET6, "dev", "vnear", "mtu", str(mtu))
        ip("-n", far, "addr", "add", f"{FAR4}/24", "dev", "vfar")
        ip("-n", far, "addr", "add", f"{FAR6}/64", "dev", "vfar", "nodad")
        ip("-n", far, "link", "set", "vfar", "up")
        ip("-n", far, "link", "set", "lo", "up")
        ip("-n", far, "route", "add", "default", "via", NEAR4)
        ip("-n", far, "-6", "route", "add", "default", "via", NEAR6)
        forwarding(ns)
        yield far
    finally:
        subprocess.run(["ip", "netns", "del", far], capture_output=True, timeout=10, check=False)
