"""Real-network measurements for ``tcpstack bench tun-*`` and ``idle``.

Each measurement runs tcpstack on a TUN device in a namespace against kernel
sockets in that namespace (a plain Python program started with ``ip netns
exec``), and -- except ``idle`` -- the same kernel program against a kernel
peer across a veth pair between two namespaces, in the same invocation, so
that the ratio tcpstack/kernel is taken on the same machine at the same moment.

Every namespace is named ``tcpstack-b<pid>-<n>...`` and removed in a
``finally``; every address is in 198.18.0.0/15; every loop is bounded in count
and by a deadline. Speed is measured and reported here, never asserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import resource
import select
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from .host import Host
from .netns import delete_netns, netns_exists

#: Every namespace a bench creates starts with this.
NS_PREFIX = "tcpstack-b"
PORT = 5001
BLOCK = 1 << 20
TIMEOUT = 60.0  # any one step (a connect, an accept, a recv, a subprocess)

VETH_A, VETH_B = "198.18.254.1", "198.18.254.2"

_counter = itertools.count()

#: The kernel's side: plain Python sockets, run in a namespace. argv: MODE ARGS...
PEER = r'''
import hashlib, json, os, random, resource, socket, statistics, sys, time
mode, a = sys.argv[1], sys.argv[2:]
T = 60
def out(**kw):
    print(json.dumps(kw), flush=True)
def listen(addr, port, backlog=1024):
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, int(port))); ls.listen(backlog); ls.settimeout(T)
    print("READY", flush=True)
    return ls
if mode == "recv":                       # addr port: one connection, read to EOF
    ls = listen(a[0], a[1]); c, _ = ls.accept(); c.settimeout(T)
    t0 = time.perf_counter(); h = hashlib.sha256(); n = 0; buf = bytearray(1 << 20); mv = memoryview(buf)
    while True:
        k = c.recv_into(buf)
        if not k: break
        h.update(mv[:k]); n += k
    secs = time.perf_counter() - t0
    c.close(); out(n=n, sha256=h.hexdigest(), secs=secs)
elif mode == "send":                     # host port nbytes seed: send, half-close, wait for EOF
    n = int(a[2]); block = random.Random(int(a[3])).randbytes(1 << 20); mv = memoryview(block)
    c = socket.create_connection((a[0], int(a[1])), timeout=T)
    left = n
    while left > 0:
        k = min(left, len(block)); c.sendall(mv[:k]); left -= k
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536): pass
    c.close(); out(n=n)
elif mode == "echo":                     # addr port: echo one connection
    ls = listen(a[0], a[1]); c, _ = ls.accept(); c.settimeout(T)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close(); out(ok=True)
elif mode == "rr":                       # host port count: 1-byte ping-pong, round trips in ns
    count = int(a[2]); c = socket.create_connection((a[0], int(a[1])), timeout=T)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []; ok = 0; pc = time.perf_counter_ns
    for i in range(count):
        b = bytes([i & 0xFF]); t = pc(); c.sendall(b); r = c.recv(1); rtts.append(pc() - t)
        if r == b: ok += 1
        elif not r: break
    c.close()
    out(count=len(rtts), ok=ok, median_us=statistics.median(rtts) / 1000 if rtts else None,
        p99_us=sorted(rtts)[int(len(rtts) * 0.99)] / 1000 if rtts else None)
elif mode == "acceptclose":              # addr port count: accept and close count connections
    ls = listen(a[0], a[1]); n = 0
    for _ in range(int(a[2])):
        c, _ = ls.accept(); c.close(); n += 1
    out(accepted=n)
elif mode == "connect":                  # host port count: sequential connect + close
    count = int(a[2]); ok = 0; errors = {}
    t0 = time.perf_counter()
    for _ in range(count):
        s = socket.socket(); s.settimeout(10)
        try:
            s.connect((a[0], int(a[1]))); ok += 1
        except OSError as e:
            errors[str(e)] = errors.get(str(e), 0) + 1
        finally:
            s.close()
    out(ok=ok, failed=count - ok, secs=time.perf_counter() - t0, errors=errors)
elif mode == "hold":                     # host port n: hold n idle connections until stdin says so
    n = int(a[2]); soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    socks = []; failed = 0
    for _ in range(n):
        try:
            socks.append(socket.create_connection((a[0], int(a[1])), timeout=10))
        except OSError:
            failed += 1
    print(json.dumps({"connected": len(socks), "failed": failed}), flush=True)
    sys.stdin.readline()
    alive = 0
    for s in socks:                      # still ESTABLISHED after the idle window: one byte each way
        try:
            s.sendall(b"x"); alive += s.recv(1) == b"x"
        except OSError:
            pass
    for s in socks: s.close()
    out(alive=alive)
'''


# ---------------------------------------------------------------------------- plumbing
def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if p.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {p.stderr.strip()}")


def ns_name(tag: str = "") -> str:
    return f"{NS_PREFIX}{os.getpid()}-{next(_counter)}{tag}"


@contextlib.contextmanager
def veth_pair(mtu: int = 1500) -> Iterator[tuple[str, str]]:
    """Two new namespaces joined by a veth pair: (ns_a, ns_b), VETH_A in a, VETH_B in b."""
    a, b = ns_name("a"), ns_name("b")
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("-n", a, "link", "add", "veth0", "mtu", str(mtu), "type", "veth", "peer", "name", "veth1", "netns", b)
        for ns, addr in ((a, VETH_A), (b, VETH_B)):
            dev = "veth0" if ns == a else "veth1"
            _ip("-n", ns, "link", "set", "dev", dev, "mtu", str(mtu))
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", "dev", dev, "up")
            _ip("-n", ns, "link", "set", "dev", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):
            if netns_exists(ns):
                delete_netns(ns)


@contextlib.contextmanager
def tun_host(offload: bool = False) -> Iterator[Host]:
    """A tcpstack Host on a TUN device in a new namespace (removed at the end)."""
    ns = ns_name("t")
    h = None
    try:
        h = Host(netns=ns, offload=offload)
        yield h
    finally:
        try:
            if h is not None:
                h.close()
        finally:
            if netns_exists(ns):
                delete_netns(ns)


class Peer:
    """A kernel-socket program in a namespace (``ip netns exec NS python3 -c PEER MODE ...``)."""

    def __init__(self, ns: str, *args: Any, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", PEER, *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
        )

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next stdout line, waiting at most ``timeout``."""
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError(f"kernel peer said nothing in {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            raise OSError(f"kernel peer exited: {self._stderr()}")
        return text.strip()

    def ready(self) -> None:
        got = self.line()
        if got != "READY":
            raise OSError(f"kernel peer: expected READY, got {got!r}")

    def result(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return json.loads(self.line(timeout))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(5)
            assert self.proc.stderr is not None
            return self.proc.stderr.read().strip()[-2000:]
        return "?"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if f is not None:
                f.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expected_sha256(nbytes: int, seed: int) -> str:
    """sha256 of what the ``send`` side sends: a 1 MiB random block repeated."""
    block = random.Random(seed).randbytes(BLOCK)
    h = hashlib.sha256()
    for _ in range(nbytes // BLOCK):
        h.update(block)
    h.update(block[: nbytes % BLOCK])
    return h.hexdigest()


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def _cpu_s() -> float:
    """CPU time (user + system) of this process, every thread: tcpstack's side of a
    measurement (the kernel peers are other processes). On a shared machine the CPU
    per operation moves less than the rates do."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------- bulk
def _tcpstack_bulk_in(tsocket: Any, h: Host, nbytes: int, seed: int) -> tuple[float, int, str]:
    ls = tsocket.create_server(("", PORT), driver=h.driver)
    try:
        ls.settimeout(TIMEOUT)
        with Peer(h.netns, "send", h.stack_addr4, PORT, nbytes, seed) as peer:
            c, _ = ls.accept()
            c.settimeout(TIMEOUT)
            t0 = time.perf_counter()
            hsh = hashlib.sha256()
            n = 0
            deadline = t0 + TIMEOUT * 4
            while time.perf_counter() < deadline:
                d = c.recv(BLOCK)
                if not d:
                    break
                hsh.update(d)
                n += len(d)
            secs = time.perf_counter() - t0
            c.close()
            peer.result()
        return secs, n, hsh.hexdigest()
    finally:
        ls.close()


def _tcpstack_bulk_out(tsocket: Any, h: Host, nbytes: int, seed: int) -> tuple[float, int, str]:
    block = memoryview(random.Random(seed).randbytes(BLOCK))
    with Peer(h.netns, "recv", h.kernel_addr4, PORT) as peer:
        peer.ready()
        c = tsocket.create_connection((h.kernel_addr4, PORT), timeout=TIMEOUT, driver=h.driver)
        try:
            left = nbytes
            while left > 0:
                k = min(left, BLOCK)
                c.sendall(block[:k])
                left -= k
            c.shutdown(tsocket.SHUT_WR)
            r = peer.result(TIMEOUT * 4)
        finally:
            c.close()
    return r["secs"], r["n"], r["sha256"]


def _kernel_bulk(nbytes: int, seed: int) -> tuple[float, int, str]:
    with veth_pair() as (a, b), Peer(a, "recv", VETH_A, PORT) as rx:
        rx.ready()
        with Peer(b, "send", VETH_A, PORT, nbytes, seed) as tx:
            r = rx.result(TIMEOUT * 4)
            tx.result()
    return r["secs"], r["n"], r["sha256"]


def run_tun_bulk(tsocket: Any, nbytes: int, direction: str = "in", offload: bool = False, seed: int = 1) -> dict[str, Any]:
    want = expected_sha256(nbytes, seed)
    with tun_host(offload) as h:
        fn = _tcpstack_bulk_in if direction == "in" else _tcpstack_bulk_out
        cpu0 = _cpu_s()
        secs, n, sha = fn(tsocket, h, nbytes, seed)
        cpu = _cpu_s() - cpu0
        offload_on = bool(h.tun.tun.offload)
    ksecs, kn, ksha = _kernel_bulk(nbytes, seed)
    mbps = n / secs / 1e6 if secs > 0 else None
    kmbps = kn / ksecs / 1e6 if ksecs > 0 else None
    return {
        "direction": direction,
        "offload": offload_on,
        "bytes": nbytes,
        "received": n,
        "sha256_equal": sha == want and n == nbytes,
        "secs": round(secs, 4),
        "mb_per_s": round(mbps, 2) if mbps else None,
        # includes the bench's own sha256 (in) / data generation (out)
        "cpu_us_per_mb": round(cpu / n * 1e12, 1) if n else None,
        "kernel_received": kn,
        "kernel_sha256_equal": ksha == want and kn == nbytes,
        "kernel_secs": round(ksecs, 4),
        "kernel_mb_per_s": round(kmbps, 2) if kmbps else None,
        "ratio": _ratio(mbps, kmbps),
    }


# ---------------------------------------------------------------------------- connect
def _accept_loop(ls: Any, count: int, keep: list[Any] | None, stop: threading.Event, deadline: float,
                 accepted: list[int]) -> None:
    ls.settimeout(0.5)
    while accepted[0] < count and not stop.is_set() and time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except (TimeoutError, OSError):
            continue
        accepted[0] += 1
        if keep is None:
            c.close()
        else:
            keep.append(c)


def run_tun_connect(tsocket: Any, count: int, seed: int = 1) -> dict[str, Any]:
    with tun_host() as h:
        ls = tsocket.create_server(("", PORT), backlog=4096, driver=h.driver)
        accepted = [0]
        stop = threading.Event()
        th = threading.Thread(target=_accept_loop, args=(ls, count, None, stop, time.monotonic() + TIMEOUT * 4,
                                                         accepted), daemon=True)
        th.start()
        try:
            cpu0 = _cpu_s()
            with Peer(h.netns, "connect", h.stack_addr4, PORT, count) as peer:
                r = peer.result(TIMEOUT * 4)
            th.join(10)
            cpu = _cpu_s() - cpu0
        finally:
            stop.set()
            th.join(5)
            ls.close()
    with veth_pair() as (a, b), Peer(a, "acceptclose", VETH_A, PORT, count) as srv:
        srv.ready()
        with Peer(b, "connect", VETH_A, PORT, count) as cli:
            k = cli.result(TIMEOUT * 4)
        ks = srv.result()
    rate = r["ok"] / r["secs"] if r["secs"] > 0 else None
    krate = k["ok"] / k["secs"] if k["secs"] > 0 else None
    return {
        "count": count,
        "ok": r["ok"],
        "failed": r["failed"],
        "accepted": accepted[0],
        "all_ok": r["ok"] == count and accepted[0] == count,
        "secs": round(r["secs"], 4),
        "per_s": round(rate, 1) if rate else None,
        "cpu_us_per_conn": round(cpu / r["ok"] * 1e6, 1) if r["ok"] else None,
        "kernel_ok": k["ok"],
        "kernel_all_ok": k["ok"] == count and ks["accepted"] == count,
        "kernel_secs": round(k["secs"], 4),
        "kernel_per_s": round(krate, 1) if krate else None,
        "ratio": _ratio(rate, krate),
        "errors": r["errors"] or None,
    }


# ---------------------------------------------------------------------------- request/response
def _echo_one(tsocket: Any, ls: Any, done: list[bool]) -> None:
    try:
        c, _ = ls.accept()
    except OSError:
        return
    c.settimeout(TIMEOUT)
    with contextlib.suppress(OSError):
        c.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_NODELAY, 1)
    try:
        deadline = time.monotonic() + TIMEOUT * 4
        while time.monotonic() < deadline:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        done[0] = True
    except OSError:
        pass
    finally:
        c.close()


def run_tun_rr(tsocket: Any, count: int, seed: int = 1) -> dict[str, Any]:
    with tun_host() as h:
        ls = tsocket.create_server(("", PORT), driver=h.driver)
        ls.settimeout(TIMEOUT)
        done = [False]
        th = threading.Thread(target=_echo_one, args=(tsocket, ls, done), daemon=True)
        th.start()
        try:
            cpu0 = _cpu_s()
            with Peer(h.netns, "rr", h.stack_addr4, PORT, count) as peer:
                r = peer.result(TIMEOUT * 4)
            th.join(10)
            cpu = _cpu_s() - cpu0
        finally:
            ls.close()
            th.join(5)
    with veth_pair() as (a, b), Peer(a, "echo", VETH_A, PORT) as srv:
        srv.ready()
        with Peer(b, "rr", VETH_A, PORT, count) as cli:
            k = cli.result(TIMEOUT * 4)
        srv.result()
    med, kmed = r["median_us"], k["median_us"]
    return {
        "count": count,
        "round_trips": r["count"],
        "all_ok": r["ok"] == count,
        "median_us": round(med, 1) if med else None,
        "p99_us": round(r["p99_us"], 1) if r["p99_us"] else None,
        "cpu_us_per_rt": round(cpu / r["count"] * 1e6, 1) if r["count"] else None,
        "kernel_all_ok": k["ok"] == count,
        "kernel_median_us": round(kmed, 1) if kmed else None,
        "kernel_p99_us": round(k["p99_us"], 1) if k["p99_us"] else None,
        # a rate ratio like the others: tcpstack's round trips per second / the kernel's
        "ratio": _ratio(kmed, med),
        "latency_ratio": _ratio(med, kmed),
    }


# ---------------------------------------------------------------------------- idle
def _thread_cpu_s(tid: int | None) -> float | None:
    """utime + stime of one thread of this process, in seconds."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_idle(tsocket: Any, connections: int, window_s: float = 5.0, seed: int = 1) -> dict[str, Any]:
    with tun_host() as h:
        ls = tsocket.create_server(("", PORT), backlog=max(connections, 128), driver=h.driver)
        keep: list[Any] = []
        accepted = [0]
        stop = threading.Event()
        rss0 = _rss_bytes()
        tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0]
        th = threading.Thread(target=_accept_loop, args=(ls, connections, keep, stop,
                                                         time.monotonic() + TIMEOUT * 4, accepted), daemon=True)
        th.start()
        peer = Peer(h.netns, "hold", h.stack_addr4, PORT, connections, stdin=True)
        try:
            held = peer.result(TIMEOUT * 4)
            th.join(TIMEOUT)
            traced = tracemalloc.get_traced_memory()[0] - traced0
            tracemalloc.stop()
            rss = _rss_bytes() - rss0
            established = sum(1 for c in keep if c.connection is not None and c.connection.state.value == "ESTABLISHED")
            time.sleep(0.5)  # let delayed ACKs and the accept thread settle
            drv = h.driver._thread
            tid = drv.native_id if drv is not None else None
            cpu0, dcpu0, t0 = time.process_time(), _thread_cpu_s(tid), time.perf_counter()
            time.sleep(window_s)
            cpu1, dcpu1, t1 = time.process_time(), _thread_cpu_s(tid), time.perf_counter()
            peer.send("go\n")
            alive_r = _idle_echo_back(keep, peer)
        finally:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
            stop.set()
            th.join(5)
            peer.close()
            for c in keep:
                with contextlib.suppress(OSError):
                    c.close()
            ls.close()
    n = max(accepted[0], 1)
    wall = t1 - t0
    return {
        "connections": connections,
        "kernel_connected": held["connected"],
        "accepted": accepted[0],
        "established": established,
        "all_ok": held["connected"] == connections and accepted[0] == connections and established == connections,
        "alive_after": alive_r,
        "window_s": round(wall, 3),
        "process_cpu_s": round(cpu1 - cpu0, 4),
        "process_cpu_pct": round((cpu1 - cpu0) / wall * 100, 3),
        "process_cpu_ms": round((cpu1 - cpu0) * 1000, 2),
        "driver_cpu_s": round(dcpu1 - dcpu0, 4) if dcpu0 is not None and dcpu1 is not None else None,
        "driver_cpu_ms": round((dcpu1 - dcpu0) * 1000, 1) if dcpu0 is not None and dcpu1 is not None else None,
        "traced_bytes_per_conn": round(traced / n),
        "rss_bytes_per_conn": round(rss / n),
    }


def _idle_echo_back(keep: list[Any], peer: Peer) -> int | None:
    """After the window the kernel sends one byte on each connection; echo it so it can count the live ones."""
    deadline = time.monotonic() + TIMEOUT
    pending = list(keep)
    for c in pending:
        c.settimeout(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            d = c.recv(1)
            if d:
                c.sendall(d)
    try:
        return int(peer.result()["alive"])
    except (OSError, TimeoutError, ValueError, KeyError):
        return None


__all__ = ["expected_sha256", "run_idle", "run_tun_bulk", "run_tun_connect", "run_tun_rr", "tun_host", "veth_pair"]
