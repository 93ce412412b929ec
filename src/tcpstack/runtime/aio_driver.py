"""The asyncio driver: the engine fed from a packet device by an asyncio event loop.

No threads. The device's fd is watched with ``loop.add_reader``; one wake-up
drains it in batches (``read_batch`` until EAGAIN, bounded so timers and
other callbacks still run), hands every packet to ``Stack.receive``, fires due
timers and writes what the engine queued with ``write_batch``. The engine's
next deadline is one ``loop.call_at`` handle, re-armed only when the deadline
changes; an idle stack has no handle at all.

User calls happen in asyncio callbacks and tasks on the same loop (the
asyncio API in :mod:`tcpstack.api.aio`); after each, the API calls
:meth:`AioDriver.changed`, which schedules one flush-and-re-arm for the
end of the current loop iteration, so many writes in one callback leave as
one batch.

The clock is CLOCK_MONOTONIC in microseconds, the same clock ``loop.time()``
reads, so an engine deadline maps onto ``loop.call_at`` directly.

:class:`AioHost` brings up a namespace, a TUN device in it, a Stack and the
driver in one object (what ``tcpstack up`` and the interop tests use).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..tcp import Config, Stack
from .driver import PacketDevice
from .tun import DEFAULT_NETNS, KERNEL_ADDR4, STACK_ADDR4, NetnsTun

__all__ = ["AioDriver", "AioHost", "now_us"]


def now_us() -> int:
    """The driver's clock: CLOCK_MONOTONIC in microseconds (``loop.time()``'s clock)."""
    return time.monotonic_ns() // 1000


class AioDriver:
    """Feeds ``stack`` from ``device`` on ``loop``; a *binding* for the asyncio API.

    ``pcap`` (a :class:`tcpstack.pcap.PcapWriter`) records every packet that
    crosses the device, in both directions, with wall-clock timestamps.
    """

    def __init__(
        self,
        stack: Stack,
        device: PacketDevice,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        pcap: Any = None,
        batch: int = 64,
        max_batches: int = 16,
    ) -> None:
        self.stack = stack
        self.device = device
        self.loop: asyncio.AbstractEventLoop = loop or asyncio.get_running_loop()
        self.pcap = pcap
        self.batch = batch
        self.max_batches = max_batches
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._flush_pending = False
        self._running = False
        # counters
        self.wakeups = 0
        self.rx_packets = 0
        self.tx_packets = 0

    def __repr__(self) -> str:
        return f"<AioDriver {self.stack.name} running={self._running}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> AioDriver:
        if self._running:
            raise RuntimeError("driver already started")
        self._running = True
        self._fd = self.device.fileno()
        self.loop.add_reader(self._fd, self._on_readable)
        self._service()
        return self

    def stop(self) -> None:
        """Stop feeding the engine (flushes what it queued first). Idempotent."""
        if not self._running:
            return
        self._flush()
        self._running = False
        self.loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    @property
    def running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------ binding
    def now(self) -> int:
        return now_us()

    def changed(self) -> None:
        """A user call changed the engine: transmit and re-arm soon (coalesced)."""
        if not self._flush_pending and self._running:
            self._flush_pending = True
            self.loop.call_soon(self._service)

    # ------------------------------------------------------------------ the loop's callbacks
    def _service(self) -> None:
        self._flush_pending = False
        if not self._running:
            return
        self._flush()
        self._rearm()

    def _on_readable(self) -> None:
        self.wakeups += 1
        stack = self.stack
        pcap = self.pcap
        read = self.device.read_batch
        batch = self.batch
        now = now_us()
        for _ in range(self.max_batches):
            pkts = read(batch)
            if not pkts:
                break
            now = now_us()
            self.rx_packets += len(pkts)
            if pcap is not None:
                wall = time.time_ns() // 1000
                for p in pkts:
                    pcap.write(wall, p)
            for p in pkts:
                stack.receive(p, now)
            self._flush()
            if len(pkts) < batch:
                break
        stack.poll(now)
        self._flush()
        self._rearm()

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = self._timer_at = None
        if not self._running:
            return
        # loop.call_at may run a hair early (float seconds): never poll before the deadline.
        self.stack.poll(max(now_us(), at or 0))
        self._flush()
        self._rearm()

    def _flush(self) -> None:
        out = self.stack.transmit()
        if out:
            self.tx_packets += len(out)
            if self.pcap is not None:
                wall = time.time_ns() // 1000
                for p in out:
                    self.pcap.write(wall, p)
            self.device.write_batch(out)

    def _rearm(self) -> None:
        d = self.stack.next_deadline()
        if d == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = d
        if d is not None:
            self._timer = self.loop.call_at(d / 1e6, self._on_timer)


class AioHost:
    """A tcpstack host on the real network, driven by asyncio: namespace (created
    if missing), TUN device, Stack, AioDriver. Use inside a running loop::

        async with AioHost("tcpstack-demo") as host:       # kernel 198.18.0.1/24, stack 198.18.0.2
            reader, writer = await tasyncio.open_connection("198.18.0.1", 7, stack=host.driver)

    ``close()`` stops the driver and removes the device, and the namespace if
    this host created it.
    """

    def __init__(
        self,
        netns: str = DEFAULT_NETNS,
        *,
        kernel_addr4: str | None = KERNEL_ADDR4,
        stack_addr4: str | None = STACK_ADDR4,
        kernel_addr6: str | None = None,
        stack_addr6: str | None = None,
        config: Config | None = None,
        mtu: int = 1500,
        pcap: Any = None,
        ifname: str = "tcps%d",
        seed: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.tun = NetnsTun(
            netns,
            ifname=ifname,
            mtu=mtu,
            addr4=kernel_addr4,
            addr6=kernel_addr6,
            stack_addr4=stack_addr4,
            stack_addr6=stack_addr6,
        )
        try:
            addrs = [a for a in (self.tun.stack_addr4, self.tun.stack_addr6) if a]
            self.stack = Stack(
                addrs, config or Config(), mtu=mtu, seed=seed, name=f"tcpstack@{self.tun.netns}"
            )
            self.driver = AioDriver(self.stack, self.tun.tun, loop=loop, pcap=pcap)
            self.driver.start()
        except BaseException:
            self.tun.close()
            raise

    @property
    def netns(self) -> str:
        return self.tun.netns

    @property
    def created_netns(self) -> bool:
        return self.tun.created_netns

    @property
    def ifname(self) -> str:
        return self.tun.ifname

    def close(self) -> None:
        try:
            self.driver.stop()
        finally:
            self.tun.close()

    async def __aenter__(self) -> AioHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> AioHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
