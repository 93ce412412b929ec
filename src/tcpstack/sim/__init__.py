"""The lab's deterministic network simulator: virtual time, seeded impairments.

- :class:`Network` — clock, event heap, hosts/routers/injectors, static routes,
  captures and observers (:mod:`.network`);
- :class:`Link`, :class:`LinkParams`, :func:`parse_rate` — one direction of a
  wire with delay, jitter, rate, queue, loss, duplication, reordering and
  corruption (:mod:`.link`).

A host runs any object with the sans-I/O endpoint protocol
(:class:`Endpoint`): ``receive(packet, now)``, ``poll(now)``,
``next_deadline()``, ``transmit()``; time is an int of microseconds.
"""

from .link import DEFAULT_QUEUE_PACKETS, Link, LinkParams, parse_rate, serialization_us
from .network import Capture, Endpoint, Host, Injector, Network, Node, Router

__all__ = [
    "DEFAULT_QUEUE_PACKETS",
    "Capture",
    "Endpoint",
    "Host",
    "Injector",
    "Link",
    "LinkParams",
    "Network",
    "Node",
    "Router",
    "parse_rate",
    "serialization_us",
]
