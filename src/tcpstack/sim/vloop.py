"""asyncio in virtual time: an event loop whose clock is the simulator's.

An unmodified asyncio application (tasks, ``asyncio.sleep``, ``wait_for``,
``asyncio.timeout``, streams over :mod:`tcpstack.asyncio`) runs inside a
:class:`~tcpstack.sim.network.Network`; a 30-second sleep takes no wall-clock
time, and a seeded run is reproducible event for event::

    net = Network(seed=1)
    ...                                   # hosts running tcpstack Stacks, links
    result = vloop.run(main(), net)       # main() is plain asyncio code

How it works. :class:`VirtualEventLoop` is the standard
:class:`asyncio.SelectorEventLoop` with two changes:

- ``loop.time()`` reads the network's clock (``Network.now`` µs, as seconds);
- its selector is a :class:`VirtualSelector`. asyncio's ``_run_once`` asks the
  selector to wait at most ``timeout`` seconds (the time to the next asyncio
  timer, 0 if callbacks are ready, None if there is no timer). Instead of
  sleeping, the selector runs the simulator's events up to ``now + timeout``
  and stops early as soon as one of them makes asyncio work ready (an engine
  waker calls ``loop.call_soon``, which the loop reports to the selector).
  When the simulator runs dry before the deadline, virtual time jumps to it:
  that is why sleeping costs nothing.

Real file descriptors still work (the loop's self-pipe, so
``call_soon_threadsafe`` and ``run_in_executor``): the selector wraps a real
one and polls it without blocking on every step. Virtual time never waits for
them, except when nothing at all is scheduled: then every task waits for
something the simulation can no longer produce, the selector waits
``real_wait`` wall-clock seconds for a thread to report, and otherwise raises
:class:`VirtualTimeDeadlock` rather than hang.

Why a selector and not a re-implemented loop: everything else in asyncio
(tasks, futures, handles, cancellation, ``Runner``) stays the stdlib's own
code, so behaviour in the simulator is the behaviour an application gets in
production.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from .network import Network

__all__ = ["VirtualEventLoop", "VirtualSelector", "VirtualTimeDeadlock", "run"]

T = TypeVar("T")

#: Simulator events run per selector call before asyncio gets a turn again.
DEFAULT_MAX_EVENTS = 200_000


class VirtualTimeDeadlock(RuntimeError):
    """Every task waits, no asyncio timer is pending and the simulator has no event left."""


class VirtualSelector(selectors.BaseSelector):
    """A selector whose ``select(timeout)`` advances the simulator instead of sleeping."""

    def __init__(
        self,
        net: Network,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        real_wait: float = 1.0,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.net = net
        self.max_events = max_events
        self.real_wait = real_wait
        #: Set by the loop whenever asyncio work becomes ready (call_soon/call_at).
        self.woken = False
        #: Calls of ``select`` (for tests and curiosity).
        self.selects = 0
        self._real = selectors.DefaultSelector()
        self._stop_when = self._is_woken

    def _is_woken(self) -> bool:
        return self.woken

    # -- registration: delegated to a real selector (self-pipe, real sockets) ---
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    # -- the clock's engine ----------------------------------------------------
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        net = self.net
        self.selects += 1
        self.woken = False
        if timeout is not None and timeout <= 0:
            # asyncio has work ready: deliver only what is due now, time stands still.
            net.run(until=net.now, stop_when=self._stop_when, max_events=self.max_events)
            return self._real.select(0)
        target = None if timeout is None else net.now + max(1, math.ceil(timeout * 1e6))
        net.run(until=target, stop_when=self._stop_when, max_events=self.max_events)
        ready = self._real.select(0)
        if ready or self.woken or target is not None or net.next_event_time() is not None:
            return ready
        # Nothing is scheduled anywhere in virtual time. Only a thread (an
        # executor job, call_soon_threadsafe) can still make progress.
        ready = self._real.select(self.real_wait)
        if ready:
            return ready
        raise VirtualTimeDeadlock(
            f"virtual time deadlock at t={net.now / 1e6:.6f} s: every task is waiting, no asyncio "
            "timer is pending and the simulated network has no event left (a peer that never "
            "answers, a server nobody connects to, or a missing timeout)"
        )


class VirtualEventLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """The stdlib selector event loop, in the virtual time of ``net``."""

    def __init__(
        self,
        net: Network,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        real_wait: float = 1.0,
    ) -> None:
        self.net = net
        self._vselector = VirtualSelector(net, max_events=max_events, real_wait=real_wait)
        super().__init__(self._vselector)
        # Virtual time moves in whole microseconds.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self.net.now / 1e6

    # Every way asyncio work becomes ready from inside a simulator event goes
    # through these two (futures and tasks use call_soon, sleeps call_at): they
    # tell the selector to stop advancing the simulator and let asyncio run.
    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:  # type: ignore[override]
        self._vselector.woken = True
        return super().call_soon(callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        self._vselector.woken = True
        return super().call_at(when, callback, *args, context=context)


def run(
    main: Coroutine[Any, Any, T],
    net: Network,
    *,
    debug: bool | None = None,
    timeout: float | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    real_wait: float = 1.0,
) -> T:
    """``asyncio.run(main)`` in the virtual time of ``net``.

    Like ``asyncio.run``, tasks still pending when ``main`` returns are
    cancelled and async generators finalised, all in virtual time.
    ``timeout`` (virtual seconds) bounds ``main``: TimeoutError after it.
    """

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main

    with asyncio.Runner(
        debug=debug,
        loop_factory=lambda: VirtualEventLoop(net, max_events=max_events, real_wait=real_wait),
    ) as runner:
        return runner.run(bounded() if timeout is not None else main)
