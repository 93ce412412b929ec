"""asyncio in virtual time: the loop's clock is the simulator's."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tcpstack.sim import vloop
from tcpstack.sim.network import Network


def test_sleep_takes_virtual_time_only() -> None:
    net = Network(seed=1)

    async def main() -> tuple[float, list[int]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        order: list[int] = []

        async def later(i: int, delay: float) -> None:
            await asyncio.sleep(delay)
            order.append(i)

        await asyncio.gather(*(later(i, d) for i, d in ((1, 20.0), (2, 5.0), (3, 12.5))))
        await asyncio.sleep(30)
        return loop.time() - t0, order

    wall = time.perf_counter()
    elapsed, order = vloop.run(main(), net)
    assert time.perf_counter() - wall < 2.0
    assert elapsed == pytest.approx(50.0)
    assert net.now == 50_000_000
    assert order == [2, 3, 1]


def test_timeouts_and_wait_for_use_virtual_time() -> None:
    net = Network(seed=1)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(7):
                await asyncio.sleep(3600)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.create_future(), 3)
        return loop.time() - t0

    assert vloop.run(main(), net) == pytest.approx(10.0)


def test_simulator_events_and_asyncio_timers_interleave_in_time_order() -> None:
    net = Network(seed=1)
    log: list[tuple[str, int]] = []
    net.call_at(1_500_000, lambda: log.append(("sim", net.now)))
    net.call_at(3_000_000, lambda: log.append(("sim", net.now)))

    async def main() -> None:
        for _ in range(4):
            await asyncio.sleep(1)
            log.append(("aio", net.now))

    vloop.run(main(), net)
    assert log == [
        ("aio", 1_000_000),
        ("sim", 1_500_000),
        ("aio", 2_000_000),
        ("sim", 3_000_000),
        ("aio", 3_000_000),
        ("aio", 4_000_000),
    ]


def test_deadlock_is_reported_not_hung() -> None:
    net = Network(seed=1)

    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nothing will ever resolve it

    wall = time.perf_counter()
    with pytest.raises(vloop.VirtualTimeDeadlock, match="deadlock"):
        vloop.run(main(), net, real_wait=0.0)
    assert time.perf_counter() - wall < 2.0


def test_threads_still_reach_the_loop() -> None:
    """run_in_executor and call_soon_threadsafe work (the real self-pipe is polled)."""
    net = Network(seed=1)

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, lambda: 6 * 7)
        fut = loop.create_future()
        threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, "hi")).start()
        return value, await fut

    assert vloop.run(main(), net, real_wait=5.0) == (42, "hi")
