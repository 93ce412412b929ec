"""The asyncio streams API over tcpstack, in the simulator, in virtual time.

Everything here is deterministic: the network is seeded and the event loop's
clock is the simulator's, so a 30 s sleep costs nothing and reruns match.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any

import pytest

from tcpstack import asyncio as tasyncio
from tcpstack.sim import vloop
from tcpstack.sim.link import LinkParams
from tcpstack.tcp import State

from . import apps
from .conftest import CLIENT4, CLIENT6, SERVER4, SERVER6, VIRTUAL_LIMIT, SimPair, make_pair


def _payload(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def run_echo(pair: SimPair, host: str, payload: bytes, pause: float = 30.0) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        server = await tasyncio.start_server(apps.echo_handler, host, 7, stack=pair.server)
        async with server:
            with tasyncio.use_stack(pair.client):
                return await apps.echo_client(tasyncio, host, 7, payload, pause=pause)

    return vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)


def test_unmodified_echo_app_runs_in_virtual_time(pair: SimPair) -> None:
    payload = _payload(2_000_000)
    wall = time.perf_counter()
    out = run_echo(pair, SERVER4, payload)
    wall = time.perf_counter() - wall
    assert out["replies"] == [b"ALPHA\n", b"BETA\n", b"GAMMA\n"]
    assert out["slept"] == pytest.approx(30.0)
    assert out["echoed"] == len(payload)
    assert out["sha256"] == hashlib.sha256(payload).hexdigest()
    assert out["peername"] == (SERVER4, 7)
    assert out["sockname"][0] == CLIENT4
    assert pair.net.now > 30_000_000  # 30 s of virtual time went by...
    assert wall < 20  # ...in a few wall-clock seconds at most (2 MB echoed through Python)


def test_echo_over_ipv6_gives_4_tuple_addresses(pair: SimPair) -> None:
    out = run_echo(pair, SERVER6, b"x" * 10_000, pause=0.1)
    assert out["peername"] == (SERVER6, 7, 0, 0)
    assert out["sockname"][0] == CLIENT6 and len(out["sockname"]) == 4
    assert out["echoed"] == 10_000


def test_lossy_link_byte_exact_and_deterministic() -> None:
    link = LinkParams(delay_us=5_000, rate_bps="20mbit", loss=0.02, reorder=0.01, dup=0.01)
    payload = _payload(300_000)
    results = []
    for _ in range(2):
        pair = make_pair(seed=5, link=link)
        out = run_echo(pair, SERVER4, payload, pause=1.0)
        assert out["sha256"] == hashlib.sha256(payload).hexdigest()
        results.append(
            (
                pair.net.now,
                pair.net.events,
                pair.client.mib.RetransSegs,
                pair.server.mib.RetransSegs,
            )
        )
    assert results[0] == results[1]
    assert results[0][2] + results[0][3] > 0  # the loss was real


def test_flow_control_pauses_writer_until_peer_reads(pair: SimPair) -> None:
    """A server that does not read: the client's engine send buffer fills, the
    transport buffers the rest, drain() blocks; once the server reads, it resumes."""
    sbuf = pair.client.config.tcp_wmem[2]
    rbuf = pair.server.config.tcp_rmem[1]
    total = sbuf + rbuf + 1_000_000
    seen: dict[str, Any] = {}

    async def main() -> None:
        go = asyncio.Event()
        got = hashlib.sha256()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()
            n = 0
            while chunk := await reader.read(1 << 16):
                got.update(chunk)
                n += len(chunk)
            seen["server_got"] = n
            writer.close()

        server = await tasyncio.start_server(handler, SERVER4, 9, stack=pair.server)
        reader, writer = await tasyncio.open_connection(SERVER4, 9, stack=pair.client)
        data = _payload(total)
        writer.write(data)
        transport = writer.transport
        seen["buffered"] = transport.get_write_buffer_size()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 10.0)  # 10 virtual seconds: still stuck
        conn = transport.get_extra_info("tcpstack_connection")
        seen["snd_wnd_while_stuck"] = conn.snd_wnd
        seen["still_buffered"] = transport.get_write_buffer_size()
        go.set()
        await writer.drain()
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        seen["sha_ok"] = got.hexdigest() == hashlib.sha256(data).hexdigest()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert seen["buffered"] == total - sbuf  # the engine took its send buffer's worth at once
    assert seen["still_buffered"] > 64 * 1024  # above the high-water mark: paused
    assert seen["snd_wnd_while_stuck"] == 0  # the receiver's window closed: TCP flow control
    assert seen["server_got"] == total and seen["sha_ok"]


def test_pause_reading_closes_the_receive_window(pair: SimPair) -> None:
    """StreamReader(limit=...) pauses the transport; the engine's window closes."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        ready = asyncio.Event()
        conns = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append((reader, writer))
            ready.set()
            await asyncio.sleep(3600)

        server = await tasyncio.start_server(handler, SERVER4, 19, stack=pair.server, limit=1024)
        reader, writer = await tasyncio.open_connection(SERVER4, 19, stack=pair.client)
        await ready.wait()
        writer.write(b"z" * 2_000_000)
        await asyncio.sleep(5)
        sreader, swriter = conns[0]
        st = swriter.transport
        seen["reading"] = st.is_reading()
        seen["reader_buffered"] = len(sreader._buffer)
        sconn = st.get_extra_info("tcpstack_connection")
        seen["server_rcv_ready"] = sconn.recvbuf.ready
        seen["client_snd_wnd"] = writer.transport.get_extra_info("tcpstack_connection").snd_wnd
        data = await sreader.readexactly(2_000_000)  # reading resumes the transport
        seen["all"] = data == b"z" * 2_000_000
        writer.close()
        swriter.close()
        server.close()
        await server.wait_closed()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert seen["reading"] is False
    assert 1024 < seen["reader_buffered"] < 1024 * 2 + 300_000
    assert seen["server_rcv_ready"] > 0  # the engine holds the rest...
    assert seen["client_snd_wnd"] == 0  # ...and advertises a zero window
    assert seen["all"]


def test_write_eof_half_close_then_reply(pair: SimPair) -> None:
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF
        conn = writer.get_extra_info("tcpstack_connection")
        seen["server_state_after_eof"] = conn.state
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await tasyncio.start_server(handler, SERVER4, 1234, stack=pair.server)
        reader, writer = await tasyncio.open_connection(SERVER4, 1234, stack=pair.client)
        assert writer.can_write_eof()
        writer.write(b"q" * 5000)
        writer.write_eof()
        with pytest.raises(RuntimeError):
            writer.write(b"more")
        seen["reply"] = await reader.read()
        conn = writer.get_extra_info("tcpstack_connection")
        seen["client_state"] = conn.state
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(1)

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert seen["reply"] == b"got 5000 bytes"
    assert seen["server_state_after_eof"] is State.CLOSE_WAIT
    assert seen["client_state"] in (State.FIN_WAIT_2, State.TIME_WAIT)
    assert pair.client.state_counts()["TIME-WAIT"] == 1
    assert not pair.server.conns  # server side fully closed (LAST-ACK acked)


def test_connection_refused_and_reset_are_stdlib_errors(pair: SimPair) -> None:
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        writer.transport.abort()  # RST

    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await tasyncio.open_connection(SERVER4, 4444, stack=pair.client)
        server = await tasyncio.start_server(handler, SERVER4, 5555, stack=pair.server)
        reader, writer = await tasyncio.open_connection(SERVER4, 5555, stack=pair.client)
        writer.write(b"abc")
        try:
            await reader.read(10)
        except ConnectionResetError as exc:
            seen["read"] = exc
        with pytest.raises(ConnectionResetError):
            writer.write(b"x")
            await writer.drain()
        writer.close()
        server.close()
        await server.wait_closed()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert isinstance(seen["read"], ConnectionResetError)


def test_unknown_host_and_missing_stack_are_clear_errors(pair: SimPair) -> None:
    import socket

    async def main() -> None:
        with pytest.raises(socket.gaierror, match="not an IP address"):
            await tasyncio.open_connection("example.com", 80, stack=pair.client)
        with pytest.raises(OSError, match="no tcpstack stack for this task"):
            await tasyncio.open_connection(SERVER4, 80)

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)

    async def kernel_loop() -> None:
        with pytest.raises(TypeError, match="nobody to feed it"):
            await tasyncio.open_connection(SERVER4, 80, stack=pair.client)

    asyncio.run(kernel_loop())


def test_server_object_is_asyncio_server_shaped(pair: SimPair) -> None:
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the handler's task runs with the server's stack as its current stack
        seen["stack"] = tasyncio.get_stack().stack
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main() -> None:
        tasyncio.set_default_stack(pair.client)
        server = await tasyncio.start_server(handler, None, 0, stack=pair.server)
        seen["serving"] = server.is_serving()
        names = [s.getsockname() for s in server.sockets]
        port = names[0][1]
        seen["names"] = names
        seen["loop_ok"] = server.get_loop() is asyncio.get_running_loop()
        async with server:
            for host in (SERVER4, SERVER6):
                reader, writer = await tasyncio.open_connection(host, port)  # the default stack
                writer.write(b"ping\n")
                seen.setdefault("echo", []).append(await reader.readline())
                writer.close()
                await writer.wait_closed()
            serve = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(1)
            serve.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serve
        seen["closed"] = not server.is_serving() and server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await tasyncio.open_connection(SERVER4, port)

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert seen["serving"] and seen["loop_ok"] and seen["closed"]
    port = seen["names"][0][1]
    lo, hi = pair.server.config.ip_local_port_range
    assert lo <= port <= hi
    assert seen["names"] == [("0.0.0.0", port), ("::", port, 0, 0)]
    assert seen["echo"] == [b"ping\n", b"ping\n"]
    assert seen["stack"] is pair.server


def test_protocol_level_create_connection(pair: SimPair) -> None:
    events: list[Any] = []

    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            events.append(("made", transport.get_extra_info("peername")))

        def data_received(self, data: bytes) -> None:
            events.append(("data", data))

        def eof_received(self) -> bool:
            events.append("eof")
            return False  # the transport closes itself

        def connection_lost(self, exc: BaseException | None) -> None:
            events.append(("lost", exc))
            self.done.set_result(None)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        writer.close()

    async def main() -> None:
        server = await tasyncio.start_server(greet, SERVER4, 25, stack=pair.server)
        transport, proto = await tasyncio.create_connection(Collect, SERVER4, 25, stack=pair.client)
        await proto.done
        assert transport.is_closing()
        server.close()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert events == [("made", (SERVER4, 25)), ("data", b"220 hello\r\n"), "eof", ("lost", None)]


def test_write_buffer_limits_follow_the_stdlib(pair: SimPair) -> None:
    async def main() -> None:
        server = await tasyncio.start_server(apps.echo_handler, SERVER4, 7, stack=pair.server)
        reader, writer = await tasyncio.open_connection(SERVER4, 7, stack=pair.client)
        t = writer.transport
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.set_write_buffer_limits(high=1000)
        assert t.get_write_buffer_limits() == (250, 1000)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(TypeError):
            writer.write("text")  # type: ignore[arg-type]
        writer.close()
        await writer.wait_closed()
        writer.write(b"after close")  # ignored, as the stdlib does
        server.close()
        await server.wait_closed()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)


def test_close_with_unread_data_resets_like_the_kernel(pair: SimPair) -> None:
    seen: dict[str, Any] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        except ConnectionResetError:
            seen["server"] = "reset"

    async def main() -> None:
        server = await tasyncio.start_server(handler, SERVER4, 8080, stack=pair.server, limit=1024)
        reader, writer = await tasyncio.open_connection(
            SERVER4, 8080, stack=pair.client, limit=1024
        )
        # the server sends nothing; make the client hold unread data: server writes
        await asyncio.sleep(0.1)
        conn = writer.get_extra_info("tcpstack_connection")
        writer.transport.pause_reading()
        srv_conn = next(iter(server.connections)).get_extra_info("tcpstack_connection")
        srv_conn.send(b"unread", pair.net.now)
        await asyncio.sleep(0.1)
        assert conn.recvbuf.ready == 6
        writer.close()
        await asyncio.sleep(0.1)
        server.close()
        await server.wait_closed()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert seen["server"] == "reset"
    assert pair.client.mib.TCPAbortOnClose == 1


def test_connect_timeout_takes_virtual_time_only(pair: SimPair) -> None:
    """SYNs into the void: TimeoutError after Linux's schedule, instantly in wall-clock terms.
    tcp_syn_linear_timeouts=4 then backoff: SYNs at 0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s and
    the give-up at 131 s (this kernel, 6.18, measured ~131-135 s for a real connect())."""

    async def main() -> tuple[BaseException, float, dict[str, int]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            await tasyncio.open_connection("198.18.0.99", 80, stack=pair.client)
        except OSError as exc:
            err: BaseException = exc
        took = loop.time() - t0
        # a connect cancelled by wait_for leaves no SYN-SENT connection behind
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                tasyncio.open_connection("198.18.0.99", 81, stack=pair.client), 5
            )
        return err, took, pair.client.state_counts()

    wall = time.perf_counter()
    err, took, counts = vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert time.perf_counter() - wall < 2
    assert isinstance(err, TimeoutError) and err.errno == 110
    assert took == pytest.approx(131.0)
    assert counts["SYN-SENT"] == 0 and not pair.client.conns


def test_many_concurrent_connections_over_a_lossy_link() -> None:
    pair = make_pair(
        seed=11,
        link=LinkParams(
            delay_us=20_000, jitter_us=2_000, rate_bps="50mbit", loss=0.03, reorder=0.01, dup=0.005
        ),
    )

    async def one(i: int) -> bool:
        data = _payload(random.Random(i).randrange(1, 100_000), seed=i)
        reader, writer = await tasyncio.open_connection(SERVER4, 7, stack=pair.client)

        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        task = asyncio.ensure_future(send())
        got = await reader.read()
        await task
        writer.close()
        await writer.wait_closed()
        return got == data

    async def main() -> list[bool]:
        server = await tasyncio.start_server(apps.echo_handler_raw, SERVER4, 7, stack=pair.server)
        results = await asyncio.gather(*(one(i) for i in range(25)))
        await asyncio.sleep(130)  # TIME-WAIT (60 s) and every timer run out
        server.close()
        await server.wait_closed()
        return results

    assert vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT) == [True] * 25
    assert pair.client.mib.RetransSegs + pair.server.mib.RetransSegs > 0
    assert not pair.client.conns and not pair.server.conns
    assert not pair.client.timewait and not pair.server.timewait


def test_stdlib_open_connection_and_start_server_unchanged(pair: SimPair) -> None:
    """tests/aio/stdlib_app.py calls asyncio.start_server / asyncio.open_connection
    itself; SimEventLoop routes them to tcpstack (the stack chosen per task)."""
    from . import stdlib_app

    async def main() -> tuple[object, float]:
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        with tasyncio.use_stack(pair.server):
            server_task = asyncio.ensure_future(stdlib_app.serve("0.0.0.0", 8000, started))
        await started
        t0 = loop.time()
        with tasyncio.use_stack(pair.client):
            answers = await asyncio.gather(
                stdlib_app.ask(SERVER4, 8000, b"kernel"), stdlib_app.ask(SERVER6, 8000, b"sim")
            )
        took = loop.time() - t0
        server_task.cancel()
        return answers, took

    wall = time.perf_counter()
    with asyncio.Runner(loop_factory=lambda: tasyncio.SimEventLoop(pair.net)) as runner:
        answers, took = runner.run(main())
    assert time.perf_counter() - wall < 5
    assert answers == [
        (b"hello, kernel\n", (SERVER4, 8000)),
        (b"hello, sim\n", (SERVER6, 8000, 0, 0)),
    ]
    assert 30 < took < 31  # the two 30 s thoughts overlapped, in virtual time
    assert pair.server.mib.PassiveOpens == 2


def test_data_received_stops_at_the_urgent_mark(pair: SimPair) -> None:
    # RFC 9293 MUST-32/33 on the asyncio API: no chunk crosses the mark, and
    # while data_received runs the TCB tells whether the mark is next.
    seen: list[tuple[bytes, int | None]] = []

    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.conn = transport.get_extra_info("tcpstack_connection")

        def data_received(self, data: bytes) -> None:
            seen.append((data, self.conn.urgent_offset))

        def connection_lost(self, exc: BaseException | None) -> None:
            self.done.set_result(None)

    async def send_urgent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("tcpstack_connection")
        now = pair.net.now
        conn.send(b"x" * 3000 + b"!", now, urgent=True)  # MSG_OOB: every segment points at "!"
        conn.send(b"after", now)
        writer.close()

    async def main() -> None:
        server = await tasyncio.start_server(send_urgent, SERVER4, 26, stack=pair.server)
        _, proto = await tasyncio.create_connection(Collect, SERVER4, 26, stack=pair.client)
        await proto.done
        server.close()

    vloop.run(main(), pair.net, timeout=VIRTUAL_LIMIT)
    assert b"".join(d for d, _ in seen) == b"x" * 3000 + b"!after"
    ends = [sum(len(d) for d, _ in seen[: i + 1]) for i in range(len(seen))]
    assert 3000 in ends, [(len(d), o) for d, o in seen]  # a chunk ends just before the mark
    assert seen[ends.index(3000)][1] == 0  # ... and then the mark is next
    assert all(o == 3000 - e for e, (_, o) in zip(ends, seen, strict=True) if e < 3000)
    assert seen[-1][1] is None
