"""`tcpstack up` and the asyncio API against the real kernel.

- ``tcpstack up`` runs as a subprocess; the kernel side is ``curl`` and plain
  sockets run inside its namespace (``ip netns exec`` / setns). Checked: a
  file and ``/bytes/100000000`` byte-exact (sha256), keep-alive reusing one
  connection, IPv6, echo and chargen, the pcap, SIGTERM leaving nothing
  behind, an existing namespace kept, and the privilege message without root.
- The asyncio echo application of ``tests/aio/apps.py`` — plain stdlib stream
  code, also run in the simulator by ``tests/aio`` — runs on tcpstack over the
  TUN device with the kernel's asyncio as the peer, both ways round.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import io
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpstack import asyncio as tasyncio
from tcpstack.pcap import read_packets
from tcpstack.runtime.aio_driver import AioHost
from tcpstack.runtime.netns import in_netns, netns_exists
from tcpstack.services import chargen
from tcpstack.services.http import pattern_sha256
from tcpstack.wire.ip import parse_ip_tcp
from tests.aio import apps

from .privileges import run_as_nobody

ADDR, ADDR6 = "198.18.0.2", "fd00:198:18::2"
KERNEL, KERNEL6 = "198.18.0.1", "fd00:198:18::1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
_names = itertools.count()


def _ns_name() -> str:
    return f"tcpstack-t{os.getpid()}-up{next(_names)}"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def _in_ns(ns: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, timeout=timeout, check=False
    )


class Up:
    """``tcpstack up`` as a subprocess; output goes to files (a full pipe would stall it)."""

    def __init__(self, ns: str, tmp: Path, *args: str) -> None:
        self.ns = ns
        self.out_path = tmp / f"{ns}.out"
        self.err_path = tmp / f"{ns}.err"
        self.t_start = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tcpstack.cli.main", "up", "--netns", ns, *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.ready_after = self._wait_ready()

    def _wait_ready(self) -> float:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if "Ctrl-C stops it" in self.stdout() or '"services"' in self.stdout():
                return time.monotonic() - self.t_start
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise AssertionError(
            f"tcpstack up did not get ready: rc={self.proc.returncode}\n"
            f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()}"
        )

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"tcpstack up ignored signal {sig}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if os.path.exists(f"/run/netns/{self.ns}"):
            _ip("netns", "del", self.ns)


def _leftovers(ns: str) -> list[str]:
    found = []
    if ns in _ip("netns", "list").stdout.split():
        found.append(f"namespace {ns} still listed by `ip netns list`")
    if os.path.exists(f"/run/netns/{ns}"):
        found.append(f"/run/netns/{ns} still exists")
    links = _ip("-o", "link", "show").stdout
    found += [
        f"link left in the root namespace: {ln.split(':')[1].strip()}"
        for ln in links.splitlines()
        if "tcps" in ln
    ]
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<h1>tcpstack interop</h1>\n")
    (root / "data.bin").write_bytes(random.Random(5).randbytes(3_000_000))
    return root


@pytest.fixture(scope="module")
def up(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `tcpstack up` with every service, IPv4 and IPv6, for the read-only tests."""
    ns = _ns_name()
    u = Up(
        ns,
        tmp_path_factory.mktemp("up"),
        "--root",
        str(site),
        "--kernel-addr6",
        "fd00:198:18::1/64",
        "--serve",
        "http:80",
        "--serve",
        "echo:7",
        "--serve",
        "chargen:19",
        "--serve",
        "discard:9",
    )
    try:
        yield u
    finally:
        rc = u.stop()
        u.kill()
        assert rc == 0, u.stderr()
        assert _leftovers(ns) == []


# ---------------------------------------------------------------------------- curl from the kernel side


def test_announces_services_and_how_to_try(up: Up) -> None:
    out = up.stdout()
    assert f"namespace {up.ns} (created)" in out
    for line in (
        "http     198.18.0.2:80",
        "echo     198.18.0.2:7",
        "chargen  198.18.0.2:19",
        "discard  198.18.0.2:9",
    ):
        assert line in out, out
    assert f"ip netns exec {up.ns} curl http://198.18.0.2/" in out
    assert netns_exists(up.ns)


def test_curl_fetches_a_file_byte_exact(up: Up, site: Path) -> None:
    r = _in_ns(up.ns, "curl", "-sS", "--fail", "--max-time", "30", f"http://{ADDR}/data.bin")
    assert r.returncode == 0, r.stderr
    assert (
        hashlib.sha256(r.stdout).hexdigest()
        == hashlib.sha256((site / "data.bin").read_bytes()).hexdigest()
    )
    r = _in_ns(up.ns, "curl", "-sS", "--fail", "--max-time", "10", f"http://{ADDR}/")
    assert r.stdout == b"<h1>tcpstack interop</h1>\n"


def _curl_sha256(ns: str, url: str, timeout: float = 120) -> tuple[int, str, float]:
    """Download ``url`` with curl in ``ns``; (bytes, sha256, seconds)."""
    h = hashlib.sha256()
    got = 0
    t0 = time.monotonic()
    cmd = ["ip", "netns", "exec", ns, "curl", "-sS", "--fail", "--max-time", str(timeout), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            h.update(chunk)
            got += len(chunk)
        rc = proc.wait(timeout + 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    return got, h.hexdigest(), time.monotonic() - t0


@pytest.mark.parametrize("offload", ["offload", "no-offload"])
def test_curl_downloads_100mb_byte_exact(
    up: Up, tmp_path: Path, offload: str, capsys: pytest.CaptureFixture, record_property: Any
) -> None:
    """/bytes/100000000 through `tcpstack up`, with TUN offload (the default: the
    engine hands the device 64 KiB TSO super-segments with partial checksums)
    and without it (every MTU-sized packet built and checksummed in Python)."""
    n = 100_000_000
    if offload == "offload":
        assert "offload checksum+TSO" in up.stdout()
        got, digest, dt = _curl_sha256(up.ns, f"http://{ADDR}/bytes/{n}")
    else:
        u = Up(_ns_name(), tmp_path, "--serve", "http:80", "--no-offload", "-q")
        try:
            assert "offload off" in u.stdout()
            got, digest, dt = _curl_sha256(u.ns, f"http://{ADDR}/bytes/{n}")
        finally:
            assert u.stop() == 0, u.stderr()
            u.kill()
    assert got == n
    assert digest == pattern_sha256(n)
    record_property("download_MBps", round(n / dt / 1e6, 1))
    with capsys.disabled():
        print(
            f"\n[up http {offload}] curl /bytes/{n}: {dt:.2f} s, {n / dt / 1e6:.1f} MB/s "
            f"({n * 8 / dt / 1e6:.0f} Mbit/s, sha256 computed by the test as it streams)"
        )


def test_keepalive_reuses_one_connection(up: Up) -> None:
    urls = [
        f"http://{ADDR}/",
        f"http://{ADDR}/bytes/100000",
        f"http://{ADDR}/nope",
        f"http://{ADDR}/index.html",
    ]
    args = ["curl", "-sS", "--max-time", "30", "-w", "%{num_connects} %{http_code}\\n"]
    for u in urls:
        args += ["-o", "/dev/null", u]
    r = _in_ns(up.ns, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\n")[:4] == ["1 200", "0 200", "0 404", "0 200"]


def test_connection_close_and_head(up: Up) -> None:
    r = _in_ns(
        up.ns,
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-I",
        "-H",
        "Connection: close",
        f"http://{ADDR}/bytes/12345",
    )
    head = r.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK"), head
    assert "Content-Length: 12345" in head and "Connection: close" in head
    r = _in_ns(
        up.ns,
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-X",
        "DELETE",
        "-w",
        "%{http_code}",
        f"http://{ADDR}/",
    )
    assert r.stdout.endswith(b"405")
    r = _in_ns(
        up.ns,
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--path-as-is",
        "-w",
        "%{http_code}",
        f"http://{ADDR}/../../etc/passwd",
    )
    assert r.stdout.endswith(b"400") and b"root:" not in r.stdout


def test_curl_over_ipv6(up: Up) -> None:
    r = _in_ns(
        up.ns, "curl", "-sS", "--fail", "-g", "--max-time", "20", f"http://[{ADDR6}]/bytes/1000000"
    )
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == pattern_sha256(1_000_000)


def test_echo_and_chargen_from_kernel_sockets(up: Up) -> None:
    with in_netns(up.ns):
        e = socket.create_connection((ADDR, 7), timeout=10)
        c = socket.create_connection((ADDR, 19), timeout=10)
    with e, c:
        data = random.Random(9).randbytes(500_000)
        e.sendall(data)
        e.shutdown(socket.SHUT_WR)
        back = bytearray()
        while chunk := e.recv(1 << 16):
            back += chunk
        assert bytes(back) == data
        got = bytearray()
        while len(got) < 20_000:
            got += c.recv(20_000 - len(got))
        assert bytes(got) == chargen.lines(20_000)


# ---------------------------------------------------------------------------- lifecycle


def test_sigterm_leaves_nothing_behind_and_pcap_has_the_conversation(tmp_path: Path) -> None:
    ns = _ns_name()
    pcap = tmp_path / "up.pcap"
    u = Up(
        ns, tmp_path, "--serve", "http:8080", "--pcap", str(pcap), "--set", "tcp_timestamps=0", "-q"
    )
    try:
        assert _in_ns(ns, "ip", "-o", "link", "show", "tcps0").returncode == 0
        r = _in_ns(ns, "curl", "-sS", "--max-time", "10", f"http://{ADDR}:8080/bytes/5000")
        assert len(r.stdout) == 5000
        t0 = time.monotonic()
        rc = u.stop(signal.SIGTERM)
        took = time.monotonic() - t0
    finally:
        u.kill()
    assert rc == 0, u.stderr()
    assert "stopped (SIGTERM)" in u.stdout() and f"namespace {ns} removed" in u.stdout()
    assert _leftovers(ns) == []
    assert took < 5
    # with offload (the default) checksums in the capture are partial: do not verify them
    segs = [parse_ip_tcp(p, False) for _, p in read_packets(pcap)]
    syns = [s for _, _, s in segs if s.flags & 0x02]
    assert any(s.dst_port == 8080 for s in syns) and any(s.src_port == 8080 for s in syns)
    assert sum(len(s.payload) for src, _, s in segs if src == ADDR) >= 5000
    assert all(
        s.ts is None for _, _, s in segs if s.flags & 0x02 and s.src_port == 8080
    )  # --set applied


def test_existing_namespace_is_kept_device_removed(tmp_path: Path) -> None:
    ns = _ns_name()
    assert _ip("netns", "add", ns).returncode == 0
    try:
        u = Up(ns, tmp_path, "--serve", "echo:7", "--json")
        info = json.loads(u.stdout().splitlines()[0])
        assert info["netns"] == ns and info["created_netns"] is False
        assert info["services"] == [{"name": "echo", "port": 7}]
        rc = u.stop(signal.SIGINT)
        assert rc == 0, u.stderr()
        assert netns_exists(ns)
        links = _in_ns(ns, "ip", "-o", "link", "show").stdout.decode()
        assert "tcps" not in links, links
    finally:
        _ip("netns", "del", ns)


def test_up_without_privileges_fails_at_once(tmp_path: Path) -> None:
    """As uid 65534 (forked, as tests/interop/test_tun.py does: /root is mode 700,
    so nobody cannot exec the venv's interpreter), and as root with every
    capability dropped (setpriv, the real command as a subprocess)."""
    ns = _ns_name()
    # nobody cannot read the interpreter's stdlib under /root: import what the
    # command needs (every subcommand module, the ascii codec) before dropping.
    from tcpstack.cli.main import build_parser, main

    build_parser()
    codecs.lookup("ascii")

    def attempt() -> list[Any]:
        err = io.StringIO()
        sys.stderr = err
        rc = main(["up", "--netns", ns])
        return [os.geteuid(), rc, err.getvalue()]

    t0 = time.monotonic()
    out = run_as_nobody(attempt)
    assert len(out) == 3, out
    euid, rc, msg = out
    took = time.monotonic() - t0
    assert euid == 65534, msg
    assert rc == 77, msg
    assert msg.startswith("tcpstack up needs CAP_NET_ADMIN (run as root"), msg
    assert "CAP_SYS_ADMIN" in msg
    assert took < 5
    assert not netns_exists(ns)

    t0 = time.monotonic()
    p = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-m",
            "tcpstack.cli.main",
            "up",
            "--netns",
            ns,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 77, p.stderr
    assert "needs CAP_NET_ADMIN and CAP_SYS_ADMIN, which this process lacks" in p.stderr
    assert time.monotonic() - t0 < 10
    assert not netns_exists(ns)


# ---------------------------------------------------------------------------- the asyncio app, kernel as peer


class KernelStreams:
    """The kernel's own asyncio streams, with sockets made inside a namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    async def open_connection(self, host: str, port: int, **kw: Any) -> Any:
        with in_netns(self.ns):
            sock = socket.socket(
                socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
            )
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, **kw)

    async def start_server(self, cb: Any, host: str, port: int, **kw: Any) -> asyncio.Server:
        with in_netns(self.ns):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family)
        return await asyncio.start_server(cb, sock=sock, **kw)


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_asyncio_echo_app_with_the_kernel_as_peer(
    offload: bool, capsys: pytest.CaptureFixture
) -> None:
    ns = _ns_name()
    payload = random.Random(3).randbytes(4_000_000)
    want = hashlib.sha256(payload).hexdigest()

    async def main() -> tuple[dict[str, Any], dict[str, Any], float, float]:
        async with asyncio.timeout(90):
            async with AioHost(
                ns, kernel_addr6="fd00:198:18::1/64", stack_addr6=ADDR6, offload=offload
            ) as host:
                kernel = KernelStreams(ns)
                # tcpstack serves, the kernel's asyncio is the client
                server = await tasyncio.start_server(apps.echo_handler, None, 7, stack=host.driver)
                t0 = time.monotonic()
                a = await apps.echo_client(kernel, ADDR, 7, payload, pause=0.2)
                ta = time.monotonic() - t0
                server.close()
                await server.wait_closed()
                # the kernel serves, tcpstack is the client (IPv6 this time)
                kserver = await kernel.start_server(apps.echo_handler, KERNEL6, 7007)
                with tasyncio.use_stack(host.driver):
                    t0 = time.monotonic()
                    b = await apps.echo_client(tasyncio, KERNEL6, 7007, payload, pause=0.2)
                    tb = time.monotonic() - t0
                kserver.close()
                await kserver.wait_closed()
                return a, b, ta, tb

    try:
        a, b, ta, tb = asyncio.run(main())
    finally:
        if os.path.exists(f"/run/netns/{ns}"):
            _ip("netns", "del", ns)
    for out in (a, b):
        assert out["replies"] == [b"ALPHA\n", b"BETA\n", b"GAMMA\n"]
        assert out["echoed"] == len(payload) and out["sha256"] == want
    assert a["peername"] == (ADDR, 7)
    assert b["peername"] == (KERNEL6, 7007, 0, 0) and b["sockname"][0] == ADDR6
    assert _leftovers(ns) == []
    with capsys.disabled():
        print(
            f"\n[aio echo {'offload' if offload else 'plain'}] 4 MB echoed through the kernel, 0.2 s pause included: "
            f"tcpstack server {ta:.2f} s, tcpstack client {tb:.2f} s"
        )


def test_stdlib_app_unchanged_on_tcpstack_over_the_tun(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/aio/stdlib_app.py calls asyncio.start_server/open_connection itself;
    under TcpstackEventLoop its TCP is tcpstack on the TUN device. The kernel is
    the peer both ways (kernel sockets passed with sock= still go to the kernel)."""
    from tests.aio import stdlib_app

    monkeypatch.setattr(stdlib_app, "THINK", 0.05)
    ns = _ns_name()

    async def main() -> tuple[bytes, Any, Any]:
        async with asyncio.timeout(60), AioHost(ns) as host:
            tasyncio.set_default_stack(host.driver)
            loop = asyncio.get_running_loop()
            started = loop.create_future()
            serving = asyncio.ensure_future(stdlib_app.serve(None, 8000, started))
            await started
            # the kernel asks tcpstack
            reader, writer = await KernelStreams(ns).open_connection(ADDR, 8000)
            writer.write(b"kernel\n")
            from_kernel = await reader.readline()
            writer.close()
            # tcpstack asks the kernel (whose server is the stdlib's, on a kernel socket)
            kserver = await KernelStreams(ns).start_server(stdlib_app.handle, KERNEL, 8001)
            from_tcpstack = await stdlib_app.ask(KERNEL, 8001, b"tcpstack")
            kserver.close()
            serving.cancel()
            return from_kernel, from_tcpstack, type(writer.transport).__name__

    try:
        with asyncio.Runner(loop_factory=tasyncio.TcpstackEventLoop) as runner:
            from_kernel, from_tcpstack, kernel_transport = runner.run(main())
    finally:
        if os.path.exists(f"/run/netns/{ns}"):
            _ip("netns", "del", ns)
    assert from_kernel == b"hello, kernel\n"
    assert from_tcpstack == (b"hello, tcpstack\n", (KERNEL, 8001))
    assert kernel_transport == "_SelectorSocketTransport"  # sock= went to the kernel
    assert _leftovers(ns) == []
