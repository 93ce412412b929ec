"""`tcpstack nc` as a subprocess, with the kernel of a namespace as the peer.

The kernel's side is ``kernel_peer.PEER``, run with ``ip netns exec``. nc
brings up its own stack and TUN device; the tests
check the bytes (sha256), the exit status and stderr line on failures, that
nc works beside another stack in the same namespace, that ``--set`` and
``--pcap`` take effect, and that nothing is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpstack.runtime.host import Host

from .kernel_peer import MiB, PeerServer, assert_kernel_clean, file_sha, in_ns, nstat, peer

BIG = 64 * MiB
SUBNET = 5  # nc runs with --addr 198.18.5.2: the kernel side is 198.18.5.1
KERNEL = f"198.18.{SUBNET}.1"
NC_ADDR = f"198.18.{SUBNET}.2"
ANY = "0.0.0.0"  # the kernel's servers listen on every address of the namespace
T = 120.0

def nc_cmd(ns: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tcpstack.cli.main", "nc", "--netns", ns, *args]


def nc(ns: str, *args: str, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
       timeout: float = T) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(nc_cmd(ns, *args), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)


def tun_devices(ns: str) -> list[str]:
    p = in_ns(ns, "ip", "-j", "link", "show")
    return [link["ifname"] for link in json.loads(p.stdout or "[]") if link["ifname"].startswith("tcps")]


@pytest.fixture
def ns(netns_name: str) -> Iterator[str]:
    """A namespace made by the test (nc must use it and leave it in place)."""
    subprocess.run(["ip", "netns", "add", netns_name], check=True, timeout=10)
    yield netns_name
    assert tun_devices(netns_name) == [], "nc left a TUN device behind"


def test_nc_upload_and_download_64mib(ns: str, tmp_path: Path) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(BIG))
    before = nstat(ns)
    with PeerServer(ns, "sink-server", ANY, 9000) as srv:
        t0 = time.monotonic()
        with open(src, "rb") as f:
            p = nc(ns, "--addr", NC_ADDR, "-w", "30", KERNEL, "9000", stdin=f)
        up_secs = time.monotonic() - t0
        res = srv.result()
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().split() == [str(BIG), file_sha(src)]
    assert res["got"] == BIG
    srv = PeerServer(ns, "source-server", ANY, 9001, BIG)
    dst = tmp_path / "down.bin"
    try:
        t0 = time.monotonic()
        with open(dst, "wb") as f:
            p = nc(ns, "--addr", NC_ADDR, "-w", "30", KERNEL, "9001", stdout=f)
        down_secs = time.monotonic() - t0
        res = srv.result()
    finally:
        srv.kill()
    assert p.returncode == 0, p.stderr.decode()
    assert dst.stat().st_size == BIG and file_sha(dst) == res["sent_sha"]
    print(f"\n[nc 64 MiB, whole process incl. start-up] upload nc -> kernel {BIG / up_secs / 1e6:.1f} MB/s "
          f"({up_secs:.2f} s), download kernel -> nc {BIG / down_secs / 1e6:.1f} MB/s ({down_secs:.2f} s)")
    assert_kernel_clean(ns, before)


def test_nc_listen_creates_and_removes_its_namespace(netns_name: str, tmp_path: Path) -> None:
    ns = netns_name
    assert not os.path.exists(f"/run/netns/{ns}")
    reply = os.urandom(3 * MiB)
    (tmp_path / "reply.bin").write_bytes(reply)
    out = tmp_path / "got.bin"
    with open(tmp_path / "reply.bin", "rb") as fin, open(out, "wb") as fout:
        proc = subprocess.Popen(nc_cmd(ns, "-v", "-l", "-w", "30", "7000"), stdin=fin, stdout=fout,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            lines = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                lines.append(line)
                if "listening on" in line or not line:
                    break
            assert "listening on" in lines[-1], lines
            addr = lines[-1].split("listening on ")[1].split()[0]
            stack_line = next(x for x in lines if x.startswith("tcpstack nc: stack "))
            stack_addr = stack_line.split()[3]
            if addr in ("0.0.0.0", "::"):
                addr = stack_addr
            assert os.path.exists(f"/run/netns/{ns}")  # nc created it
            # The kernel sends a little and half-closes long before nc has sent
            # its 3 MiB: nc must keep sending after the peer's FIN.
            res = peer(ns, "exchange-client", addr, 7000, 16 * 1024, timeout=60)
            rc = proc.wait(timeout=30)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert rc == 0, err
    assert file_sha(out) == res["sent_sha"]  # kernel -> nc -> stdout
    assert res["got"] == len(reply) and res["got_sha"] == hashlib.sha256(reply).hexdigest()  # stdin -> kernel
    assert not os.path.exists(f"/run/netns/{ns}"), "nc did not remove the namespace it created"


def test_nc_refused_timeout_reset_exit_statuses(ns: str) -> None:
    p = nc(ns, "--addr", NC_ADDR, "-w", "5", KERNEL, "9999")
    assert p.returncode == 1
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "refused" in err[0].lower(), err
    # Nobody answers for .77 (the kernel does not forward): connect times out.
    t0 = time.monotonic()
    p = nc(ns, "--addr", NC_ADDR, "-w", "1", f"198.18.{SUBNET}.77", "80")
    assert p.returncode == 1 and time.monotonic() - t0 < 20
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "timed out" in err[0], err
    with PeerServer(ns, "reset-server", ANY, 9004) as srv:
        p = subprocess.run(nc_cmd(ns, "--addr", NC_ADDR, "-w", "10", KERNEL, "9004"), input=b"x",
                           capture_output=True, timeout=T, check=False)
        srv.result()
    assert p.returncode == 1
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "reset" in err[0], err


def test_nc_beside_another_stack_in_the_namespace(ns: str, tmp_path: Path) -> None:
    """A stack already owns 198.18.0.0/24 in the namespace (as `tcpstack up` would):
    nc picks the next free subnet, works, and leaves the other stack alone."""
    with Host(ns, seed=1) as other:
        assert other.kernel_addr4 == "198.18.0.1"
        with PeerServer(ns, "source-server", ANY, 9005, MiB) as srv:
            p = nc(ns, "-v", "-w", "20", "198.18.0.1", "9005")
            res = srv.result()
        assert p.returncode == 0, p.stderr.decode()
        assert hashlib.sha256(p.stdout).hexdigest() == res["sent_sha"]
        stderr = p.stderr.decode()
        assert "stack 198.18.1.2 " in stderr, stderr
        assert tun_devices(ns) == [other.ifname]  # nc's device is gone, the other one stays
        assert other.driver.running


def test_nc_set_and_pcap(ns: str, tmp_path: Path) -> None:
    pcap = tmp_path / "nc.pcap"
    with PeerServer(ns, "source-server", ANY, 9006, 256 * 1024) as srv:
        p = nc(ns, "--addr", NC_ADDR, "-w", "20", "--set", "tcp_sack=0", "--set", "net.ipv4.tcp_timestamps=0",
               "--no-offload", "--pcap", str(pcap), KERNEL, "9006")
        res = srv.result()
    assert p.returncode == 0, p.stderr.decode()
    assert hashlib.sha256(p.stdout).hexdigest() == res["sent_sha"]
    syn = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                          "-T", "fields", "-e", "tcp.options.sack_perm", "-e", "tcp.options.timestamp.tsval",
                          "-e", "tcp.options.mss_val"], capture_output=True, text=True, timeout=60, check=True)
    rows = [r.split("\t") for r in syn.stdout.splitlines() if r.strip()]
    assert len(rows) == 1, syn.stdout
    sack_perm, tsval, mss = rows[0]
    assert sack_perm == "" and tsval == "" and mss == "1460"  # --set took effect on the wire
    bad = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "_ws.malformed || tcp.analysis.ack_lost_segment"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert bad.stdout.strip() == ""


def test_nc_bad_arguments() -> None:
    p = subprocess.run([sys.executable, "-m", "tcpstack.cli.main", "nc", "198.18.0.1"], capture_output=True,
                       text=True, timeout=30, check=False)
    assert p.returncode != 0 and "HOST PORT" in p.stderr
    p = subprocess.run([sys.executable, "-m", "tcpstack.cli.main", "nc", "--set", "nonsense=1", "198.18.0.1", "7"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode != 0 and "nonsense" in p.stderr


def _start_listening_nc(ns: str, *args: str, stdin: Any = subprocess.DEVNULL,
                        stdout: Any = subprocess.PIPE) -> tuple[subprocess.Popen[bytes], list[str]]:
    """nc -v -l ... in the background; returns it once it says it is listening."""
    proc = subprocess.Popen(nc_cmd(ns, "-v", "-l", *args), stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        lines.append(line)
        if "listening on" in line or not line:
            break
    assert "listening on" in lines[-1], lines
    return proc, lines


def test_nc_ipv6_listen(netns_name: str) -> None:
    proc, lines = _start_listening_nc(netns_name, "-6", "-w", "30", "7000")
    try:
        stack_line = next(x for x in lines if x.startswith("tcpstack nc: stack "))
        addr6 = next(a for a in stack_line.split()[3:5] if ":" in a)
        res = peer(netns_name, "exchange-client", addr6, 7000, MiB, timeout=60)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.decode()
    assert hashlib.sha256(out).hexdigest() == res["sent_sha"]  # kernel -> nc over IPv6
    assert res["got"] == 0  # nc's stdin was empty: the kernel just gets EOF


def test_nc_sigterm_removes_device_and_namespace(netns_name: str) -> None:
    proc, _ = _start_listening_nc(netns_name, "9")
    try:
        assert os.path.exists(f"/run/netns/{netns_name}")
        proc.terminate()
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 143
    assert not os.path.exists(f"/run/netns/{netns_name}")
