"""End to end: `tcpstack up` with its control socket, the kernel as the peer,
`tcpstack ss/stat/sysctl` as separate processes.

Needs root, /dev/net/tun and `ip` (interop rule: fails without them unless
TCPSTACK_ALLOW_SKIP_INTEROP=1).  Every namespace is tcpstack-ctl-<pid>-<n>
and is removed whatever happens.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require_root

pytestmark = pytest.mark.interop

ADDR, KERNEL = "198.18.0.2", "198.18.0.1"
READY_TIMEOUT = 20.0
_n = itertools.count()

# The kernel's side: three echo connections held open, one closed by the kernel
# (its TIME-WAIT lands in the kernel), one HTTP request with "Connection: close"
# (tcpstack closes first, so that TIME-WAIT lands in tcpstack).  Prints the
# local ports as JSON, then holds everything until stdin closes (bounded).
KERNEL_SIDE = r"""
import json, select, socket, sys
A = sys.argv[1]
held = []
for _ in range(3):
    s = socket.create_connection((A, 7), timeout=10)
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += s.recv(4 - len(got))
    assert got == b"ping", got
    held.append(s)
closed = socket.create_connection((A, 7), timeout=10)
closed_port = closed.getsockname()[1]
closed.sendall(b"bye")
assert closed.recv(3) == b"bye"
closed.shutdown(socket.SHUT_WR)
while closed.recv(4096):
    pass
closed.close()
web = socket.create_connection((A, 80), timeout=10)
web_port = web.getsockname()[1]
web.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
body = b""
while chunk := web.recv(65536):
    body += chunk
web.close()
assert body.startswith(b"HTTP/1.1 200"), body[:100]
print(json.dumps({"held": [s.getsockname()[1] for s in held], "closed": closed_port, "web": web_port}), flush=True)
select.select([sys.stdin], [], [], 60)
"""


def _ns() -> str:
    return f"tcpstack-ctl-{os.getpid()}-{next(_n)}"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


def tcpstack(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpstack.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Up:
    def __init__(self, tmp: Path, ns: str, *args: str) -> None:
        self.ns = ns
        self.out = tmp / f"{ns}.out"
        self.err = tmp / f"{ns}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tcpstack.cli.main", "up", "--netns", ns, "-q", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.stdout()
            if "Ctrl-C stops it" in text or '"services"' in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"tcpstack up did not get ready: rc={self.proc.poll()}\n{self.stdout()}\n{self.stderr()}"
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("tcpstack up ignored SIGTERM") from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            # A killed `up` cannot remove its socket file (the next one would replace it).
            for p in (
                f"/run/tcpstack/{self.ns}.sock",
                f"/tmp/tcpstack-{os.geteuid()}/{self.ns}.sock",
            ):
                if os.path.exists(p):
                    os.unlink(p)
        if os.path.exists(f"/run/netns/{self.ns}"):
            _ip("netns", "del", self.ns)


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[list[Up]]:
    require_root("the control socket interop tests", tun=True)
    made: list[Up] = []
    yield made
    for u in made:
        u.cleanup()


def _leftovers(ns: str, path: str) -> list[str]:
    found = []
    if os.path.exists(f"/run/netns/{ns}"):
        found.append(f"/run/netns/{ns} still exists")
    if os.path.exists(path):
        found.append(f"control socket {path} still exists")
    found += [ln for ln in _ip("-o", "link", "show").stdout.splitlines() if "tcps" in ln]
    return found


def _kernel_ss(ns: str) -> list[tuple[str, str, str]]:
    """(state, local, peer) of the kernel's TCP sockets in ``ns``."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-tanH"], capture_output=True, text=True, timeout=10
    )
    return [tuple(ln.split()[i] for i in (0, 3, 4)) for ln in r.stdout.splitlines()]  # type: ignore[misc]


def test_up_control_socket_end_to_end(ups: list[Up], tmp_path: Path, sockdir: Path) -> None:
    ns = _ns()
    path = str(sockdir / "up.sock")
    up = Up(tmp_path, ns, "--serve", "echo:7", "--serve", "http:80", "--control", path)
    ups.append(up)
    up.wait_ready()
    assert f"  control {path} (tcpstack ss, stat, sysctl)" in up.stdout().splitlines()
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600

    kernel = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", KERNEL_SIDE, ADDR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = kernel.stdout.readline() if kernel.stdout else ""
        assert line, kernel.stderr.read() if kernel.stderr else ""
        ports = json.loads(line)

        # The picture settles within a few RTTs (the closed echo connection's last ACK).
        deadline = time.monotonic() + 10
        while True:
            r = tcpstack("ss", "--control", path, "--json")
            assert r.returncode == 0, r.stderr
            socks = json.loads(r.stdout)["sockets"]
            states = sorted((s["state"], s["local_port"], s["remote_port"]) for s in socks)
            want = sorted(
                [("LISTEN", 7, 0), ("LISTEN", 80, 0), ("TIME-WAIT", 80, ports["web"])]
                + [("ESTABLISHED", 7, p) for p in ports["held"]]
            )
            if states == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert states == want
        for s in socks:
            if s["state"] == "ESTABLISHED":
                assert (
                    s["remote_addr"] == KERNEL and s["info"]["rtt"] > 0 and s["info"]["snd_mss"] > 0
                )
                assert s["info"]["bytes_received"] == 4 and s["info"]["bytes_acked"] == 4
            if s["state"] == "TIME-WAIT":
                assert (
                    s["timer"]["name"] == "timewait" and 0 < s["timer"]["expires_us"] <= 60_000_000
                )

        # The kernel, an independent witness: the mirror of each connection, and the
        # TIME-WAIT of the connection it closed itself (the closer keeps TIME-WAIT).
        kss = _kernel_ss(ns)
        for p in ports["held"]:
            assert ("ESTAB", f"{KERNEL}:{p}", f"{ADDR}:7") in kss, kss
        assert ("TIME-WAIT", f"{KERNEL}:{ports['closed']}", f"{ADDR}:7") in kss, kss
        assert ("TIME-WAIT", f"{KERNEL}:{ports['web']}", f"{ADDR}:80") not in kss

        text = tcpstack("ss", "--control", path, "-o", "state", "time-wait")
        assert text.returncode == 0
        lines = text.stdout.splitlines()
        assert lines[0] == "Recv-Q Send-Q Local Address:Port Peer Address:Port"
        assert lines[1].split()[:4] == ["0", "0", f"{ADDR}:80", f"{KERNEL}:{ports['web']}"]
        assert lines[1].split()[4].startswith("timer:(timewait,")

        r = tcpstack("stat", "--control", path, "--json")
        doc = json.loads(r.stdout)
        assert doc["states"] == {
            "CLOSED": 0,
            "LISTEN": 2,
            "SYN-SENT": 0,
            "SYN-RECEIVED": 0,
            "ESTABLISHED": 3,
            "FIN-WAIT-1": 0,
            "FIN-WAIT-2": 0,
            "CLOSE-WAIT": 0,
            "CLOSING": 0,
            "LAST-ACK": 0,
            "TIME-WAIT": 1,
        }
        mib = doc["mib"]
        assert (
            mib["TcpPassiveOpens"] == 5 and mib["TcpActiveOpens"] == 0 and mib["TcpCurrEstab"] == 3
        )
        assert mib["TcpInSegs"] > 0 and mib["TcpOutSegs"] > 0

        r = tcpstack("sysctl", "--control", path, "net.ipv4.tcp_syncookies=2")
        assert (r.returncode, r.stdout, r.stderr) == (0, "net.ipv4.tcp_syncookies = 2\n", "")
        r = tcpstack("sysctl", "--control", path, "tcp_syncookies")
        assert r.stdout == "net.ipv4.tcp_syncookies = 2\n"
        r = tcpstack("sysctl", "--control", path, "tcp_tw_recycle=1")
        assert r.returncode == 1 and r.stderr.startswith(
            "tcpstack sysctl: tcp_tw_recycle is refused:"
        )
    finally:
        if kernel.stdin:
            kernel.stdin.close()
        try:
            kernel.wait(15)
        except subprocess.TimeoutExpired:
            kernel.kill()
            kernel.wait(5)
    assert up.stop() == 0, up.stderr()
    assert _leftovers(ns, path) == []


def test_up_default_control_path_found_by_netns(ups: list[Up], tmp_path: Path) -> None:
    ns = _ns()
    up = Up(tmp_path, ns, "--serve", "echo:7", "--json")
    ups.append(up)
    up.wait_ready()
    setup = json.loads(up.stdout().splitlines()[0])
    path = setup["control"]
    assert path in (f"/run/tcpstack/{ns}.sock", f"/tmp/tcpstack-0/{ns}.sock")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    r = tcpstack("stat", "--netns", ns, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["states"]["LISTEN"] == 1
    r = tcpstack("ss", "--netns", ns, "-H")
    assert r.stdout.split() == ["LISTEN", "0", "100", "*:7", "*:*"]  # asyncio's default backlog
    assert up.stop() == 0, up.stderr()
    assert _leftovers(ns, path) == []


def test_second_up_on_the_same_control_socket_fails_cleanly(
    ups: list[Up], tmp_path: Path, sockdir: Path
) -> None:
    path = str(sockdir / "shared.sock")
    first = Up(tmp_path, _ns(), "--serve", "echo:7", "--control", path)
    ups.append(first)
    first.wait_ready()
    second = Up(tmp_path, _ns(), "--serve", "echo:7", "--control", path)
    ups.append(second)
    assert second.proc.wait(20) == 1
    assert second.stderr().strip() == (
        f"tcpstack up: cannot open the control socket {path}: [Errno 98] {path} is in use: "
        "another tcpstack is serving there"
    )
    assert not os.path.exists(f"/run/netns/{second.ns}")  # it removed what it created
    assert tcpstack("stat", "--control", path, "--json").returncode == 0  # the first is untouched
    assert first.stop() == 0, first.stderr()
    assert _leftovers(first.ns, path) == []
