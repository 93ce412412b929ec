"""Drivers that feed the engine, and the real-network plumbing they use.

- :mod:`.netns` — network namespaces compatible with ``ip netns``; :func:`in_netns`
  switches the calling thread into one (setns(2)).
- :mod:`.tun` — :class:`TunDevice` (a non-blocking TUN fd with batched I/O and
  optional virtio-net offload) and :class:`NetnsTun` (namespace + device, one
  context manager that leaves nothing behind).
"""

from .netns import NetnsLease, delete_netns, ensure_netns, in_netns, netns_exists
from .tun import (
    DEFAULT_NETNS,
    KERNEL_ADDR4,
    KERNEL_ADDR6,
    STACK_ADDR4,
    STACK_ADDR6,
    VNET_HDR_NONE,
    NetnsTun,
    TunDevice,
    VnetHdr,
)

__all__ = [
    "DEFAULT_NETNS",
    "KERNEL_ADDR4",
    "KERNEL_ADDR6",
    "STACK_ADDR4",
    "STACK_ADDR6",
    "VNET_HDR_NONE",
    "NetnsLease",
    "NetnsTun",
    "TunDevice",
    "VnetHdr",
    "delete_netns",
    "ensure_netns",
    "in_netns",
    "netns_exists",
]
