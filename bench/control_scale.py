"""How fast does a stack with 10,000 connections answer `ss` and `stat` on its control socket?

    .venv/bin/python bench/control_scale.py [--conns 10000] [--timewait 0] [--repeat 5]

Builds two sans-I/O stacks joined by hand (no namespace, no privileges): the
client opens CONNS connections to the server, which accepts them all
(ESTABLISHED on both sides); TIMEWAIT more are opened and closed by the server
first, so that it holds them in TIME-WAIT.  The server's stack is then put
behind an AioControlServer (an asyncio loop in a thread, as in `tcpstack up`)
and a ControlClient in the main thread times, REPEAT times each (median, min):

- ``ping`` (the round trip itself);
- ``stat`` (state counts and the MIB);
- ``ss`` (every socket, no tcp_info: what `tcpstack ss` asks for);
- ``ss`` with ``info`` (every socket with tcp_info and timers: `ss -i`, `--json`);
- ``ss state time-wait`` (a filter: the walk without the big answer);

The client runs in a forked process (as `tcpstack ss` does); meanwhile a 1 ms
heartbeat task on the server's loop records the longest stall per request
kind: how long the stack could not process packets.  Then, in process: the
snapshot alone (the part that must not be interrupted), the JSON encoding,
and rendering the `tcpstack ss` table on the client.  Numbers go to stdout; docs/observe.md
quotes a run.  Not a test: wall-clock time is measured here, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tcpstack.cli.ss_cmd import render_table  # noqa: E402
from tcpstack.runtime.control import (  # noqa: E402
    AioControlServer,
    ControlClient,
    encode,
    encode_chunks,
    handle,
)
from tcpstack.tcp import Config, FixedIsn, Stack  # noqa: E402

SERVER, CLIENT = "198.18.0.2", "198.18.0.1"
HOP = 1_000  # µs each way


def pump(a: Stack, b: Stack, now: int, rounds: int = 50) -> int:
    for _ in range(rounds):
        to_b = list(a.transmit())
        to_a = list(b.transmit())
        if not to_a and not to_b:
            return now
        now += HOP
        for p in to_b:
            b.receive(p, now)
        for p in to_a:
            a.receive(p, now)
    raise RuntimeError("the stacks did not settle")


def build(conns: int, timewait: int) -> tuple[Stack, Stack, int, list[Any]]:
    cfg = Config()
    cfg.set("ip_local_port_range", "10000 65000")
    server = Stack([SERVER], cfg, isn=FixedIsn(1000), seed=1, ts_offset=lambda k: 0, name="server")
    client = Stack(
        [CLIENT], cfg.copy(), isn=FixedIsn(5000), seed=2, ts_offset=lambda k: 0, name="client"
    )
    now = 1_000_000
    lst = server.listen(80, now, backlog=4096)
    keep: list[Any] = []
    batch = 500
    total = conns + timewait
    made = 0
    while made < total:
        n = min(batch, total - made)
        for _ in range(n):
            keep.append(client.connect(SERVER, 80, now))
        now = pump(client, server, now)
        while (c := lst.accept()) is not None:
            keep.append(c)
        made += n
    if timewait:
        closers = [c for c in keep if c.stack is server][conns:]
        for c in closers:
            c.close(now)
        now = pump(client, server, now)
        for c in keep:
            if c.stack is client and c.state.value == "CLOSE-WAIT":
                c.close(now)
        now = pump(client, server, now)
    return server, client, now, keep


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


REQUESTS = (
    ("ping", "ping", {}),
    ("stat", "stat", {}),
    ("ss", "ss", {}),
    ("ss -i (info + timers)", "ss", {"info": True}),
    ("ss state time-wait", "ss", {"states": ["time-wait"]}),
)


def client_process(path: str, repeat: int, w: int) -> None:
    """In the forked child: time each request; report phases and results on ``w``."""

    def say(obj: Any) -> None:
        os.write(w, (json.dumps(obj) + "\n").encode())

    with ControlClient(path, timeout=120) as c:
        for name, cmd, kw in REQUESTS:
            say({"phase": name})
            med, best, result = timed(lambda cmd=cmd, kw=kw: c.call(cmd, **kw), repeat)
            say(
                {"row": [f"control {name}", med, best, len(encode({"ok": True, "result": result}))]}
            )
    say({"done": True})


async def serve_and_watch(
    server: Stack, now: int, repeat: int
) -> tuple[list[Any], dict[str, float]]:
    """Serve the control socket here; a forked client times requests; a 1 ms
    heartbeat measures the longest stall of this loop while each kind is answered."""
    d = tempfile.mkdtemp(prefix="tcpstack-bench-")
    path = os.path.join(d, "ctl.sock")
    srv = await AioControlServer.start(server, path, lambda: now)
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            client_process(path, repeat, w)
        finally:
            os._exit(0)
    os.close(w)
    rows: list[Any] = []
    stalls: dict[str, float] = {}
    phase = {"name": "start"}
    done = loop.create_future()
    buf = b""

    def on_pipe() -> None:
        nonlocal buf
        data = os.read(r, 65536)
        if not data:
            if not done.done():
                done.set_result(None)
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "phase" in msg:
                phase["name"] = msg["phase"]
            elif "row" in msg:
                rows.append(msg["row"])
            elif "done" in msg and not done.done():
                done.set_result(None)

    loop.add_reader(r, on_pipe)

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            t = time.perf_counter()
            gap = t - last
            last = t
            if gap > stalls.get(phase["name"], 0.0):
                stalls[phase["name"]] = gap

    hb = asyncio.create_task(heartbeat())
    try:
        await asyncio.wait_for(done, 600)
    finally:
        hb.cancel()
        loop.remove_reader(r)
        os.close(r)
        os.waitpid(pid, 0)
        srv.close()
        os.rmdir(d)
    return rows, stalls


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--timewait", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    t = time.perf_counter()
    server, client, now, keep = build(args.conns, args.timewait)
    counts = {k: v for k, v in server.state_counts().items() if v}
    print(f"built in {time.perf_counter() - t:.1f} s: server {counts}")

    rows, stalls = asyncio.run(serve_and_watch(server, now, args.repeat))
    print(f"\nthrough the control socket (client in another process), repeat {args.repeat}:")
    print(f"{'request':<32} {'median':>9} {'min':>9} {'answer':>9} {'longest loop stall':>19}")
    for name, med, best, size in rows:
        short = name.removeprefix("control ")
        print(
            f"{short:<32} {med * 1e3:>7.1f}ms {best * 1e3:>7.1f}ms {size / 1e6:>7.2f}MB "
            f"{stalls.get(short, 0.0) * 1e3:>17.1f}ms"
        )

    print(
        "\nin process: the loop is blocked for the snapshot, then yields between 256-record slices:"
    )
    print(f"{'what':<32} {'median':>9} {'min':>9}")
    for name, req in (
        ("snapshot ss", {"cmd": "ss"}),
        ("snapshot ss -i", {"cmd": "ss", "info": True}),
        ("snapshot stat", {"cmd": "stat"}),
    ):
        med, best, _ = timed(lambda req=req: handle(server, req, now), args.repeat)
        print(f"{name:<32} {med * 1e3:>7.1f}ms {best * 1e3:>7.1f}ms")
    records = handle(server, {"cmd": "ss", "info": True}, now)["result"]["sockets"]
    med, best, _ = timed(
        lambda: list(encode_chunks({"ok": True, "result": {"sockets": records}})), args.repeat
    )
    print(f"{'JSON of ss -i (all slices)':<32} {med * 1e3:>7.1f}ms {best * 1e3:>7.1f}ms")
    med, best, lines = timed(lambda: render_table(records), args.repeat)
    print(
        f"{'client: render the ss table':<32} {med * 1e3:>7.1f}ms {best * 1e3:>7.1f}ms  ({len(lines)} lines)"
    )
    med, best, lines = timed(lambda: render_table(records, info=True, timers=True), args.repeat)
    print(
        f"{'client: render ss -i':<32} {med * 1e3:>7.1f}ms {best * 1e3:>7.1f}ms  ({len(lines)} lines)"
    )
    print(f"({len(keep)} connection objects held on both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
