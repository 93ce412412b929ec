"""PyTCP's side of bench/pytcp_side_by_side.py: one scenario on a TAP device, one JSON line out.

Runs with the PyTCP virtual environment's interpreter (never the project's),
inside the namespace the orchestrator made, on the TAP device it made there:

    ip netns exec NS VENV/bin/python pytcp_peer.py --tap tap0 --addr 198.18.0.2/24 MODE ARGS...

Modes (the tcpstack side of ``tcpstack bench`` does the same in
src/tcpstack/runtime/bench.py; the kernel peer is that file's PEER program):

    recv PORT                 accept one connection, read to EOF; time accept -> EOF, sha256
    send HOST PORT N SEED     connect, send N bytes (the 1 MiB random block of SEED repeated),
                              shut down the write side, wait for the peer's EOF
    acceptclose PORT COUNT    accept COUNT connections and close each at once
    echo PORT                 echo one connection until EOF (for the kernel's 1-byte ping-pong)
    hold PORT COUNT WINDOW    accept COUNT connections, measure this process's CPU over an idle
                              WINDOW seconds, then echo one byte on each (the kernel counts them)

It prints ``READY`` once the stack runs (and, for server modes, listens), and
one JSON object at the end. ``cpu_s`` is this process's CPU time (user +
system, the whole stack included: PyTCP runs on one asyncio loop in this
process) over the measured part. Every wait is bounded: the whole mode runs
under ``--deadline`` seconds and reports a timeout instead of hanging.

PyTCP's ``send()`` never blocks: it appends to an unbounded buffer and wakes
the sender. The sender here hands over 1 MiB at a time and yields to the loop
between blocks, as an application would.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
import traceback
from typing import Any

from pmd_net_addr import Ip4IfAddr, MacAddress
from pmd_pytcp import socket as psocket
from pmd_pytcp import stack

BLOCK = 1 << 20
MAC = "02:00:00:77:77:77"


def out(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def cpu() -> float:
    return time.process_time()


async def listener(port: int, backlog: int = 1024) -> Any:
    ls = psocket.socket(psocket.AF_INET, psocket.SOCK_STREAM)
    ls.setsockopt(psocket.SOL_SOCKET, psocket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(backlog=backlog)
    return ls


async def settle(c: Any, timeout: float = 3.0) -> None:
    """After close(): PyTCP sends its FIN from the loop later; keep the stack up until it is done."""
    deadline = time.monotonic() + timeout
    while getattr(c.state, "name", "CLOSED") not in ("CLOSED", "TIME_WAIT") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def mode_recv(a: list[str], step: float, progress: dict[str, Any]) -> dict[str, Any]:
    ls = await listener(int(a[0]))
    print("READY", flush=True)
    c, _ = await ls.accept(timeout=step)
    t0, c0 = time.perf_counter(), cpu()
    h = hashlib.sha256()
    n = 0
    while True:
        d = await c.recv(BLOCK, timeout=step)
        if not d:
            break
        h.update(d)
        n += len(d)
        progress.update(n=n, secs=time.perf_counter() - t0, cpu_s=cpu() - c0)
    secs, cpu_s = time.perf_counter() - t0, cpu() - c0
    c.close()
    await settle(c)
    ls.close()
    return {"n": n, "sha256": h.hexdigest(), "secs": secs, "cpu_s": cpu_s}


async def mode_send(a: list[str], step: float, progress: dict[str, Any]) -> dict[str, Any]:
    host, port, nbytes, seed = a[0], int(a[1]), int(a[2]), int(a[3])
    block = random.Random(seed).randbytes(BLOCK)
    print("READY", flush=True)
    c = psocket.socket(psocket.AF_INET, psocket.SOCK_STREAM)
    t0, c0 = time.perf_counter(), cpu()
    await asyncio.wait_for(c.connect((host, port)), step)
    left = nbytes
    while left > 0:
        k = min(left, BLOCK)
        await c.send(block if k == BLOCK else block[:k])
        left -= k
        await asyncio.sleep(0)
    c.shutdown(psocket.SHUT_WR)
    while await c.recv(65536, timeout=step):  # the kernel closes after it has read to EOF
        pass
    secs, cpu_s = time.perf_counter() - t0, cpu() - c0
    c.close()
    await settle(c)
    return {"n": nbytes, "secs": secs, "cpu_s": cpu_s}


async def mode_acceptclose(a: list[str], step: float, progress: dict[str, Any]) -> dict[str, Any]:
    port, count = int(a[0]), int(a[1])
    ls = await listener(port, backlog=4096)
    print("READY", flush=True)
    n = 0
    c0 = None
    t0 = time.perf_counter()
    for _ in range(count):
        c, _ = await ls.accept(timeout=step)
        if c0 is None:
            t0, c0 = time.perf_counter(), cpu()
        c.close()
        n += 1
        progress.update(accepted=n)
    await asyncio.sleep(0.2)  # let the last FIN/ACK exchanges finish
    ls.close()
    return {"accepted": n, "secs": time.perf_counter() - t0, "cpu_s": cpu() - (c0 or cpu())}


async def mode_echo(a: list[str], step: float, progress: dict[str, Any]) -> dict[str, Any]:
    ls = await listener(int(a[0]))
    print("READY", flush=True)
    c, _ = await ls.accept(timeout=step)
    c.setsockopt(psocket.IPPROTO_TCP, psocket.TCP_NODELAY, 1)
    c0 = cpu()
    n = 0
    while True:
        d = await c.recv(65536, timeout=step)
        if not d:
            break
        await c.send(d)
        n += len(d)
    cpu_s = cpu() - c0
    c.close()
    await settle(c)
    ls.close()
    return {"ok": True, "echoed": n, "cpu_s": cpu_s}


async def mode_hold(a: list[str], step: float, progress: dict[str, Any]) -> dict[str, Any]:
    port, count, window = int(a[0]), int(a[1]), float(a[2])
    ls = await listener(port, backlog=max(count, 128))
    print("READY", flush=True)
    keep = []
    for _ in range(count):
        c, _ = await ls.accept(timeout=step)
        keep.append(c)
    await asyncio.sleep(0.5)  # delayed ACKs settle, as tcpstack's idle bench does
    t0, c0 = time.perf_counter(), cpu()
    await asyncio.sleep(window)
    wall, cpu_s = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({"idle_done": True}), flush=True)  # the kernel may now send its byte
    echoed = 0
    for c in keep:
        try:
            d = await c.recv(1, timeout=step)
            if d:
                await c.send(d)
                echoed += 1
        except (OSError, TimeoutError):
            pass
    await asyncio.sleep(0.2)
    for c in keep:
        c.close()
    ls.close()
    return {"accepted": len(keep), "window_s": wall, "cpu_s": cpu_s, "echoed": echoed}


async def claimed(addr: str, timeout: float) -> None:
    """Wait until PyTCP owns ``addr``: it first runs RFC 5227 address conflict
    detection (probes, then announcements, ~5-8 s) and ignores ARP for it until then."""
    deadline = time.monotonic() + timeout
    while str(addr) not in {str(a) for a in stack.local_ip4_unicast()}:
        if time.monotonic() > deadline:
            raise TimeoutError(f"PyTCP did not claim {addr} within {timeout} s")
        await asyncio.sleep(0.1)


MODES = {
    "recv": mode_recv,
    "send": mode_send,
    "acceptclose": mode_acceptclose,
    "echo": mode_echo,
    "hold": mode_hold,
}


async def main_async(args: argparse.Namespace) -> int:
    if args.debug:  # PyTCP's own channel log on stderr
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    iface = stack.initialize_interface__tap(args.tap, mac_address=MacAddress(MAC))
    sysctls = {}
    for item in args.sysctl:
        key, _, value = item.partition("=")
        sysctls[key] = int(value) if value.lstrip("-").isdigit() else value
    stack.init(**iface, ip4_host=Ip4IfAddr(args.addr), ip4_dhcp=False, ip6_support=False, sysctls=sysctls)
    await stack.start()
    progress: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        await claimed(args.addr.split("/")[0], args.step)
        t0 = time.monotonic()
        result = await asyncio.wait_for(MODES[args.mode](args.args, args.step, progress), args.deadline)
        out(**result)
        return 0
    except TimeoutError:  # asyncio.TimeoutError is TimeoutError on 3.11
        waited = time.monotonic() - t0
        out(error=f"timeout: PyTCP did not finish {args.mode!r} in {waited:.0f} s", timeout=True, **progress)
        return 1
    except Exception as exc:  # report PyTCP's failure as a result, never hang or fake one
        out(error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-1500:])
        return 1
    finally:
        await asyncio.wait_for(stack.stop(), 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tap", required=True, help="the TAP device (already created in this namespace)")
    ap.add_argument("--addr", required=True, help="PyTCP's address/prefix, e.g. 198.18.0.2/24")
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds for the whole mode")
    ap.add_argument("--step", type=float, default=30.0, help="seconds for any one accept/connect/recv")
    ap.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE",
                    help="a PyTCP sysctl for stack.init(), e.g. tcp.rcv_wnd_max=6291456")
    ap.add_argument("--debug", action="store_true", help="PyTCP's debug log on stderr")
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("args", nargs="*")
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
