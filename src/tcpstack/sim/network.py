"""A deterministic network in virtual time: hosts, routers, links, one event heap.

Why it looks like this:

- **Virtual time, one heap.** The clock is an int of microseconds that jumps
  from event to event; there is no wall clock, no sleep and no thread, so a
  run of a million segments takes seconds and a seed reproduces it byte for
  byte. Heap entries are plain tuples ``(time, sequence, fn, arg)``: the
  sequence number makes same-time events run in the order they were
  scheduled (FIFO), and keeps tuple comparison from ever reaching ``fn``.
- **Sans-I/O endpoints.** A host holds an :class:`Endpoint` (the TCP stack,
  or a test's sink) that never sees the network: the network calls
  ``receive``/``poll`` with the current time, then *services* the host —
  drains ``transmit()`` onto the routed link and keeps exactly one wake-up
  scheduled for ``next_deadline()``. Only hosts something touched are
  serviced (the one that received or was polled; all of them after an
  application callback, which may call into any stack), so idle hosts cost
  nothing per event.
- **Static routing by hop count.** Routes are recomputed lazily after a
  topology change: a breadth-first search from each node, in ``connect``
  order so ties are deterministic, through routers only (hosts do not
  forward). Packets are routed by the destination address read straight
  from the IP header (IPv4 bytes 16:20, IPv6 bytes 24:40).
- **Routers forward unchanged.** No TTL/hop-limit decrement, no checksum
  update, no ICMP: the simulator studies TCP, and a router that rewrote
  headers would make captures at both ends differ for no TCP reason. A
  packet for an address nobody owns (or whose header corruption made it
  unreadable) is dropped and counted in ``Network.unroutable`` and the
  node's ``unroutable``.

Captures (:meth:`Network.pcap`) and observers (:meth:`Network.on_packet`) see
packets at the links, so they show impairments as they happen.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from os import PathLike
from random import Random
from typing import Any, BinaryIO, Protocol

from tcpstack.pcap import PcapWriter

from .link import Link, LinkParams, PacketObserver

__all__ = ["Capture", "Endpoint", "Host", "Injector", "Network", "Node", "Router"]


class Endpoint(Protocol):
    """What a host runs: the sans-I/O TCP stack, or any object shaped like it.

    Time is an int in microseconds. ``transmit()`` returns the raw IPv4/IPv6
    packets the endpoint wants on the wire and forgets them.
    """

    def receive(self, packet: bytes, now: int) -> None: ...

    def poll(self, now: int) -> None: ...

    def next_deadline(self) -> int | None: ...

    def transmit(self) -> list[bytes]: ...


_Event = tuple[int, int, Callable[[Any], None], Any]


class _Loopback:
    """Route-table marker: the destination is the sending node itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LOOPBACK"


_LOOPBACK = _Loopback()


class Node:
    """A named point in the topology. Hosts, routers and injectors are nodes."""

    kind = "node"

    __slots__ = ("name", "net", "addresses", "routes", "unroutable", "_r4", "_r6", "_loop_cb")

    def __init__(self, net: Network, name: str, addresses: list[str]) -> None:
        self.name = name
        self.net = net
        self.addresses = list(addresses)
        # packed destination address -> Link (or _LOOPBACK); built by Network.
        self.routes: dict[bytes, Link | _Loopback] = {}
        # The same routes as the forwarding path uses them: destination ->
        # bound ``send(packet, now)``, one table per IP version so that a
        # short or garbled packet's slice can never match the other family.
        self._r4: dict[bytes, Callable[[bytes, int], None]] = {}
        self._r6: dict[bytes, Callable[[bytes, int], None]] = {}
        self._loop_cb = self._loopback
        self.unroutable = 0

    def _loopback(self, packet: bytes, now: int) -> None:
        # To itself: delivered at once, but through the heap so an endpoint
        # is never re-entered from inside its own transmit().
        net = self.net
        heappush(net._heap, (now, next(net._counter), self._rx, packet))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _rx(self, packet: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Host(Node):
    """A node running an :class:`Endpoint`."""

    kind = "host"

    __slots__ = (
        "endpoint",
        "wake_at",
        "_receive",
        "_poll",
        "_transmit",
        "_next_deadline",
        "_wake_cb",
    )

    def __init__(self, net: Network, name: str, endpoint: Endpoint, addresses: list[str]) -> None:
        super().__init__(net, name, addresses)
        self.endpoint = endpoint
        #: The deadline of the one pending wake-up that counts (None: none).
        self.wake_at: int | None = None
        # Bound methods cached: looked up once, not once per packet.
        self._receive = endpoint.receive
        self._poll = endpoint.poll
        self._transmit = endpoint.transmit
        self._next_deadline = endpoint.next_deadline
        self._wake_cb = self._wake

    def _rx(self, packet: bytes) -> None:
        self._receive(packet, self.net.now)
        self._service()

    def _wake(self, deadline: int) -> None:
        # A wake-up superseded by an earlier one is left in the heap (removing
        # it would cost O(n)); it is recognised here by its stale deadline.
        if deadline != self.wake_at:
            return
        self.wake_at = None
        self._poll(self.net.now)
        self._service()

    def _service(self) -> None:
        """Put what the endpoint wants to send on the wire; schedule its next wake."""
        net = self.net
        packets = self._transmit()
        if packets:
            if not net._routes_valid:
                net._ensure_routes()
            now = net.now
            r4 = self._r4
            r6 = self._r6
            # Network._forward, inlined: this loop carries every segment.
            for packet in packets:
                if type(packet) is not bytes:
                    # A packet sits in the heap until delivered: it must not
                    # change if the endpoint reuses its buffer.
                    packet = bytes(packet)
                version = packet[0] >> 4 if packet else 0
                if version == 4:
                    send = r4.get(packet[16:20])
                elif version == 6:
                    send = r6.get(packet[24:40])
                else:
                    send = None
                if send is None:
                    net.unroutable += 1
                    self.unroutable += 1
                else:
                    send(packet, now)
        deadline = self._next_deadline()
        if deadline is not None:
            wake_at = self.wake_at
            if wake_at is None or deadline < wake_at:
                self.wake_at = deadline
                now = net.now
                heappush(
                    net._heap,
                    (
                        deadline if deadline > now else now,
                        next(net._counter),
                        self._wake_cb,
                        deadline,
                    ),
                )


class Router(Node):
    """Forwards every packet along its route, unchanged (no TTL, no checksum)."""

    kind = "router"

    __slots__ = ()

    def _rx(self, packet: bytes) -> None:
        # Network._forward, inlined for the multi-hop hot path.
        if not self.net._routes_valid:
            self.net._ensure_routes()
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            send = self._r4.get(packet[16:20])
        elif version == 6:
            send = self._r6.get(packet[24:40])
        else:
            send = None
        if send is None:
            net = self.net
            net.unroutable += 1
            self.unroutable += 1
        else:
            send(packet, self.net.now)


class Injector(Node):
    """A raw packet source (and sink) with no TCP: for floods and crafted segments.

    Packets it receives are counted in ``received`` and passed to
    ``on_receive(now, packet)`` if set; nothing else happens to them.
    """

    kind = "injector"

    __slots__ = ("received", "on_receive", "_send_cb")

    def __init__(self, net: Network, name: str, addresses: list[str]) -> None:
        super().__init__(net, name, addresses)
        self.received = 0
        self.on_receive: Callable[[int, bytes], None] | None = None
        self._send_cb = self._send_now

    def send(self, packet: bytes | bytearray | memoryview, at: int | None = None) -> None:
        """Put ``packet`` on this node's routed outgoing link now, or at time ``at``."""
        net = self.net
        packet = bytes(packet)
        if at is None or at == net.now:
            net._forward(self, packet)
        elif at < net.now:
            raise ValueError(f"cannot inject at {at} µs: the clock is already at {net.now} µs")
        else:
            heappush(net._heap, (at, next(net._counter), self._send_cb, packet))

    def _send_now(self, packet: bytes) -> None:
        self.net._forward(self, packet)

    def _rx(self, packet: bytes) -> None:
        self.received += 1
        if self.on_receive is not None:
            self.on_receive(self.net.now, packet)


class Capture:
    """A running capture; ``close()`` stops it (and closes a file it opened)."""

    __slots__ = ("_net", "_writer", "_owns", "_node", "_link", "closed")

    def __init__(
        self,
        net: Network,
        writer: PcapWriter | Any,
        owns: bool,
        node: str | None,
        link: Link | None,
    ) -> None:
        self._net = net
        self._writer = writer
        self._owns = owns
        self._node = node
        self._link = link
        self.closed = False

    def _observe(self, now: int, link: Link, packet: bytes, event: str) -> None:
        node = self._node
        if node is not None:
            # What the node's own interface would show: packets it puts on a
            # link, and packets a link hands to it (after impairments).
            if (event == "send" and link.src == node) or (event == "deliver" and link.dst == node):
                self._writer.write(now, packet)
        elif link is self._link and event == "deliver":
            self._writer.write(now, packet)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._net._remove_observer(self._observe)
        if self._net._captures.count(self):
            self._net._captures.remove(self)
        if self._owns:
            self._writer.close()
        elif hasattr(self._writer, "flush"):
            self._writer.flush()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Network:
    """The simulated network: a virtual clock (µs), nodes, links and an event heap.

    ``seed`` seeds the single ``random.Random`` every link draws from, so the
    same seed and the same script give the same packets at the same times.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = Random(seed)
        #: Virtual time in microseconds. Only the event loop advances it.
        self.now = 0
        #: Packets dropped because no route matched their destination.
        self.unroutable = 0
        #: Events processed so far (including stale wake-ups).
        self.events = 0
        self._heap: list[_Event] = []
        self._counter = itertools.count()
        self._nodes: dict[str, Node] = {}
        self._hosts: list[Host] = []
        self._links: list[Link] = []
        self._adjacent: dict[str, list[Link]] = {}
        self._owners: dict[bytes, str] = {}
        self._routes_valid = True
        self._observers: list[PacketObserver] = []
        self._captures: list[Capture] = []
        self._clock = self._get_now
        self._run_app_cb = self._run_app

    def _get_now(self) -> int:
        return self.now

    # ------------------------------------------------------------------ topology

    def _add_node(self, node: Node) -> Node:
        if not node.name or not isinstance(node.name, str):
            raise ValueError(f"node name must be a non-empty string, got {node.name!r}")
        if node.name in self._nodes:
            raise ValueError(f"a node named {node.name!r} already exists")
        packed = []
        for address in node.addresses:
            try:
                key = ipaddress.ip_address(address).packed
            except ValueError:
                raise ValueError(
                    f"{node.name}: {address!r} is not an IPv4 or IPv6 address"
                ) from None
            owner = self._owners.get(key)
            if owner is not None or key in packed:
                raise ValueError(f"address {address} is already used by {owner or node.name!r}")
            packed.append(key)
        for key in packed:
            self._owners[key] = node.name
        self._nodes[node.name] = node
        self._adjacent[node.name] = []
        self._routes_valid = False
        return node

    def add_host(self, name: str, endpoint: Endpoint, addresses: list[str]) -> Host:
        """Add a host running ``endpoint`` and owning ``addresses``."""
        host = Host(self, name, endpoint, addresses)
        self._add_node(host)
        self._hosts.append(host)
        return host

    def add_router(self, name: str) -> Router:
        """Add a router: it owns no address and forwards by the routing table."""
        router = Router(self, name, [])
        self._add_node(router)
        return router

    def add_injector(self, name: str, addresses: list[str] | None = None) -> Injector:
        """Add a raw packet source; ``addresses`` route replies back to it."""
        injector = Injector(self, name, addresses or [])
        self._add_node(injector)
        return injector

    def connect(
        self,
        a: str,
        b: str,
        params: LinkParams | None = None,
        params_back: LinkParams | None = None,
    ) -> tuple[Link, Link]:
        """Join nodes ``a`` and ``b`` with two links, a->b (``params``) and
        b->a (``params_back``, default the same parameters; each direction
        keeps its own queue and counters)."""
        if a == b:
            raise ValueError(f"cannot connect {a!r} to itself")
        node_a = self.node(a)
        node_b = self.node(b)
        if params is None:
            params = LinkParams()
        if params_back is None:
            params_back = params
        forward = self._make_link(node_a, node_b, params)
        back = self._make_link(node_b, node_a, params_back)
        return forward, back

    def _make_link(self, src: Node, dst: Node, params: LinkParams) -> Link:
        link = Link(
            src.name,
            dst.name,
            params,
            self.rng,
            self._heap,
            self._counter,
            dst._rx,
            self._clock,
            self._observers,
        )
        self._links.append(link)
        self._adjacent[src.name].append(link)
        self._routes_valid = False
        return link

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r}") from None

    def endpoint(self, name: str) -> Endpoint:
        node = self.node(name)
        if not isinstance(node, Host):
            raise TypeError(f"{name!r} is a {node.kind}, not a host")
        return node.endpoint

    def link(self, a: str, b: str) -> Link:
        """The (first) link from ``a`` to ``b``."""
        for link in self._adjacent.get(a, ()):
            if link.dst == b:
                return link
        raise KeyError(f"no link from {a!r} to {b!r}")

    @property
    def links(self) -> list[Link]:
        return list(self._links)

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def route(self, src: str, address: str) -> list[str]:
        """The node names a packet from ``src`` to ``address`` visits (for humans)."""
        self._ensure_routes()
        key = ipaddress.ip_address(address).packed
        path = [src]
        node = self.node(src)
        while True:
            hop = node.routes.get(key)
            if hop is None:
                raise KeyError(f"no route from {src!r} to {address}")
            if hop is _LOOPBACK:
                return path
            assert isinstance(hop, Link)
            path.append(hop.dst)
            node = self._nodes[hop.dst]

    def _ensure_routes(self) -> None:
        if self._routes_valid:
            return
        for node in self._nodes.values():
            node.routes = routes = self._routes_from(node)
            node._r4 = {}
            node._r6 = {}
            for key, hop in routes.items():
                table = node._r4 if len(key) == 4 else node._r6
                table[key] = node._loop_cb if hop is _LOOPBACK else hop.send  # type: ignore[union-attr]
        self._routes_valid = True

    def _routes_from(self, source: Node) -> dict[bytes, Link | _Loopback]:
        # Breadth-first by hop count; first_hop[n] is the link leaving
        # `source` on a shortest path to n. Only the source and routers are
        # expanded: a host or injector is a leaf, never a transit node.
        first_hop: dict[str, Link] = {}
        queue: deque[str] = deque()
        for link in self._adjacent[source.name]:
            if link.dst not in first_hop and link.dst != source.name:
                first_hop[link.dst] = link
                queue.append(link.dst)
        while queue:
            name = queue.popleft()
            if not isinstance(self._nodes[name], Router):
                continue
            hop = first_hop[name]
            for link in self._adjacent[name]:
                if link.dst not in first_hop and link.dst != source.name:
                    first_hop[link.dst] = hop
                    queue.append(link.dst)
        routes: dict[bytes, Link | _Loopback] = {}
        for key, owner in self._owners.items():
            if owner == source.name:
                routes[key] = _LOOPBACK
            elif owner in first_hop:
                routes[key] = first_hop[owner]
        return routes

    def _forward(self, node: Node, packet: bytes) -> None:
        """Send ``packet`` from ``node`` along its route, by destination address
        (IPv4 bytes 16:20, IPv6 bytes 24:40); count it if no route matches."""
        if not self._routes_valid:
            self._ensure_routes()
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            send = node._r4.get(packet[16:20])
        elif version == 6:
            send = node._r6.get(packet[24:40])
        else:
            send = None
        if send is None:
            self.unroutable += 1
            node.unroutable += 1
        else:
            send(packet, self.now)

    # ---------------------------------------------------------- applications

    def call_at(self, t: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at virtual time ``t``; afterwards every host is serviced,
        so packets an application call queued go out at ``t``."""
        if type(t) is not int:
            raise TypeError(f"time must be an int of microseconds, got {t!r}")
        if t < self.now:
            raise ValueError(f"cannot schedule at {t} µs: the clock is already at {self.now} µs")
        heappush(self._heap, (t, next(self._counter), self._run_app_cb, fn))

    def call_later(self, dt: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` ``dt`` microseconds from now."""
        if dt < 0:
            raise ValueError(f"delay must be >= 0 µs, got {dt}")
        self.call_at(self.now + dt, fn)

    def _run_app(self, fn: Callable[[], None]) -> None:
        fn()
        self._service_all()

    def service(self, name: str | None = None) -> None:
        """Drain host ``name`` (or every host) now and reschedule its wake-up.

        The loop does this by itself after each event for the host the event
        touched, after application callbacks for every host, and at the start
        of ``run``/``step``. Call it only after reaching into a stack from
        somewhere else — say, an endpoint's observer that calls another host's
        stack synchronously — so that host's packets leave at this instant.
        """
        if name is None:
            self._service_all()
            return
        node = self.node(name)
        if not isinstance(node, Host):
            raise TypeError(f"{name!r} is a {node.kind}, not a host")
        if not self._routes_valid:
            self._ensure_routes()
        node._service()

    def _service_all(self) -> None:
        if not self._routes_valid:
            self._ensure_routes()
        for host in self._hosts:
            host._service()

    # ------------------------------------------------------------ event loop

    def next_event_time(self) -> int | None:
        """When the next event is due, or None if nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Process one event. Returns False if there was none."""
        self._service_all()
        heap = self._heap
        if not heap:
            return False
        t, _, fn, arg = heappop(heap)
        self.now = t
        self.events += 1
        fn(arg)
        return True

    def run(
        self,
        until: int | None = None,
        stop_when: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> None:
        """Process events in time order.

        Stops when no event is left, before the first event later than
        ``until`` (the clock then reads exactly ``until``, also if the heap ran
        dry earlier), as soon as ``stop_when()`` is true (checked after each
        event), or after ``max_events`` events — the bound for a run that
        might not end, e.g. an endpoint that keeps asking to be polled.
        Hosts are serviced first, so packets queued by calls made before
        ``run`` (``connect``, ``send``...) go out at the current time.
        """
        if until is not None and until < self.now:
            raise ValueError(f"until={until} µs is in the past (now={self.now} µs)")
        if max_events is not None and max_events < 0:
            raise ValueError(f"max_events must be >= 0, got {max_events}")
        self._service_all()
        heap = self._heap
        processed = 0
        try:
            if until is None and stop_when is None and max_events is None:
                # The hot loop: nothing to check but the heap.
                while heap:
                    t, _, fn, arg = heappop(heap)
                    self.now = t
                    fn(arg)
                    processed += 1
                return
            limit = -1 if max_events is None else max_events
            horizon = until
            while heap and processed != limit:
                if horizon is not None and heap[0][0] > horizon:
                    break
                t, _, fn, arg = heappop(heap)
                self.now = t
                fn(arg)
                processed += 1
                if stop_when is not None and stop_when():
                    return
            else:
                if processed == limit and heap and (until is None or heap[0][0] <= until):
                    return  # stopped by max_events, short of `until`
            if until is not None:
                self.now = until
        finally:
            self.events += processed

    # ------------------------------------------------------ observation

    def on_packet(self, callback: PacketObserver) -> Callable[[], None]:
        """Call ``callback(time_us, link, packet, event)`` for every link event.

        Events: ``"send"`` (offered to a link), ``"deliver"`` (handed to the far
        node, after impairments), ``"drop-loss"``, ``"drop-queue"``, ``"dup"``
        (a second copy was made), ``"corrupt"`` (packet is the corrupted copy)
        and ``"reorder"`` (held back so later packets overtake it).
        Returns a function that removes the observer.
        """
        self._observers.append(callback)
        return lambda: self._remove_observer(callback)

    def _remove_observer(self, callback: PacketObserver) -> None:
        # Links share this very list, so removal is seen everywhere at once.
        for i, existing in enumerate(self._observers):
            if existing == callback:
                del self._observers[i]
                return

    def capture(self, target: str | Link, writer: Any) -> Capture:
        """Write packets to ``writer`` (anything with ``write(ts_us, packet)``).

        ``target`` is a node name — every packet the node sends, and every
        packet delivered to it — or a :class:`Link` — every packet it delivers.
        The writer stays open when the capture is closed (the caller owns it).
        """
        if isinstance(target, Link):
            capture = Capture(self, writer, False, None, target)
        else:
            self.node(target)
            capture = Capture(self, writer, False, target, None)
        self._captures.append(capture)
        self._observers.append(capture._observe)
        return capture

    def pcap(
        self,
        path: str | PathLike[str] | BinaryIO,
        *,
        node: str,
        snaplen: int = 262144,
    ) -> Capture:
        """Capture at ``node`` into a pcap file (LINKTYPE_RAW, virtual timestamps
        counted from the epoch). Close it, or the network, to flush the file.
        Captures watch links, so a packet a host sends to its own address
        (delivered without crossing a link) is not in the file."""
        self.node(node)
        writer = PcapWriter(path, snaplen=snaplen)
        capture = Capture(self, writer, True, node, None)
        self._captures.append(capture)
        self._observers.append(capture._observe)
        return capture

    def close(self) -> None:
        """Close every capture (flushing its file)."""
        for capture in list(self._captures):
            capture.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
