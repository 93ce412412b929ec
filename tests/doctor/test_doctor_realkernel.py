"""`tcpstack doctor --netns` against the real Linux kernel.

A network namespace of our own (tcpstack-doctor-<pid>, removed in a finally)
holds a child Python process, started with ``ip netns exec NAME python3 -c``,
that creates on 127.0.0.1 inside it:

- a listener;
- N connections the server side closes first while the client never calls
  close(): the child holds N CLOSE-WAIT sockets (and the kernel N orphaned
  FIN-WAIT-2 server sockets);
- M connections the client closes first (the server closes after reading
  EOF): M TIME-WAIT sockets on the client side;
- K half-open connections: raw SYNs from 198.18.0.99 (routed into lo, not
  local, so our SYN-ACKs go nowhere) to a listener on 198.18.0.1, which the
  kernel keeps as request sockets (SYN-RECEIVED, no owner).

Needs root (namespaces, raw sockets). CI runs as root: without it this test
FAILS rather than skips.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpstack.doctor import NetnsSource, SourceError, examine

N_CLOSE_WAIT = 12  # >= findings.CLOSE_WAIT_WARNING: a warning
M_TIME_WAIT = 5
K_SYN_RECV = 3
COMM = "tsd-closewait"
SRC = str(Path(__file__).resolve().parents[2] / "src")

CHILD = r"""
import ctypes, os, socket, struct, sys, time
N, M, K, comm = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(64); port = ls.getsockname()[1]
keep = []
for _ in range(N):  # server closes first; the client (us) never closes
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    s, _ = ls.accept(); s.close(); keep.append(c)
for _ in range(M):  # client closes first -> TIME-WAIT on the client side
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    s, _ = ls.accept(); c.close(); s.settimeout(5)
    assert s.recv(1) == b""; s.close()
syn_ls = socket.socket(); syn_ls.bind(("198.18.0.1", 8080)); syn_ls.listen(64)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
src, dst = socket.inet_aton("198.18.0.99"), socket.inet_aton("198.18.0.1")
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
for i in range(K):
    tcp = struct.pack("!HHIIBBHHH", 40000 + i, 8080, 1000 + i, 0, 5 << 4, 0x02, 65535, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i + 1, 0, 64, 6, 0, src, dst)
    raw.sendto(ip + tcp, ("198.18.0.1", 0))
# readiness gate (not the assertion): wait, bounded, until the kernel shows the states
want = {"08": N, "06": M, "03": K}
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    seen = {}
    for line in open("/proc/thread-self/net/tcp").read().splitlines()[1:]:
        st = line.split()[3]; seen[st] = seen.get(st, 0) + 1
    if all(seen.get(k, 0) == v for k, v in want.items()):
        break
    time.sleep(0.05)
print("READY", os.getpid(), port, flush=True)
sys.stdin.read()  # hold every socket until the test closes our stdin
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=15, capture_output=True)


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "tcpstack.cli.doctor_cmd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture(scope="module")
def scenario():
    if os.geteuid() != 0:
        pytest.fail(
            "tests/doctor/test_doctor_realkernel.py needs root: it creates a network namespace and "
            "raw sockets. Run the suite as root (CI does); this test must not be skipped."
        )
    if shutil.which("ip") is None:
        pytest.fail("iproute2 ('ip') is required (make deps-debian)")
    name = f"tcpstack-doctor-{os.getpid()}"
    ip("netns", "add", name)
    child = None
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", "198.18.0.1/32", "dev", "lo")
        ip("-n", name, "route", "add", "198.18.0.99/32", "dev", "lo")
        child = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                "python3",
                "-c",
                CHILD,
                str(N_CLOSE_WAIT),
                str(M_TIME_WAIT),
                str(K_SYN_RECV),
                COMM,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            child.kill()
            _, err = child.communicate(timeout=10)
            pytest.fail(f"child did not get ready: {line!r} {err[-2000:]}")
        _, pid, port = line.split()
        yield {"netns": name, "pid": int(pid), "port": int(port)}
    finally:
        if child is not None:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], timeout=15)


def test_close_wait_and_time_wait_counts_and_owner(scenario):
    pid = scenario["pid"]
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == COMM  # the kernel's own record of the command
    proc = doctor("--netns", scenario["netns"], "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    states = report["states"]
    assert states["CLOSE-WAIT"] == N_CLOSE_WAIT
    assert states["TIME-WAIT"] == M_TIME_WAIT
    assert states["FIN-WAIT-2"] == N_CLOSE_WAIT  # the server ends, orphaned
    assert states["SYN-RECEIVED"] == K_SYN_RECV
    assert states["LISTEN"] == 2
    assert states["ESTABLISHED"] == 0
    assert (
        sum(states.values())
        == report["total_sockets"]
        == 2 * N_CLOSE_WAIT + M_TIME_WAIT + K_SYN_RECV + 2
    )

    owners = report["owners"]
    assert owners["CLOSE-WAIT"] == [{"pid": pid, "command": COMM, "count": N_CLOSE_WAIT}]
    assert owners["LISTEN"] == [{"pid": pid, "command": COMM, "count": 2}]
    assert owners["TIME-WAIT"] == [] and report["unowned"]["TIME-WAIT"] == M_TIME_WAIT
    assert owners["SYN-RECEIVED"] == [] and report["unowned"]["SYN-RECEIVED"] == K_SYN_RECV
    assert report["orphans"] == {"FIN-WAIT-2": N_CLOSE_WAIT}
    assert report["close_wait_detail"]["peer_orphans_on_this_host"] == N_CLOSE_WAIT
    assert report["close_wait_detail"]["eof_not_read"] == N_CLOSE_WAIT

    findings = {f["id"]: f for f in report["findings"]}
    cw = findings["close-wait"]
    assert cw["severity"] == "warning"
    assert f"pid {pid} ({COMM}) holds {N_CLOSE_WAIT}" in cw["detail"]
    assert "No sysctl" in cw["advice"]
    assert f"{M_TIME_WAIT} on connections it opened" in findings["time-wait"]["detail"]
    assert findings["orphan-fin-wait-2"]["severity"] == "info"

    port = scenario["port"]
    assert {
        "port": port,
        "total": N_CLOSE_WAIT + M_TIME_WAIT,
        "states": {"CLOSE-WAIT": N_CLOSE_WAIT, "TIME-WAIT": M_TIME_WAIT},
    } in report["ports"]["outgoing"]
    assert {"port": 8080, "total": K_SYN_RECV, "states": {"SYN-RECEIVED": K_SYN_RECV}} in report[
        "ports"
    ]["incoming"]
    # the namespace's own sysctls and counters (a fresh namespace starts at 0)
    assert report["tunables"]["tcp_fin_timeout"] == 60
    assert report["counters"]["ActiveOpens"] == N_CLOSE_WAIT + M_TIME_WAIT
    assert report["counters"]["PassiveOpens"] == N_CLOSE_WAIT + M_TIME_WAIT


def test_human_report_names_the_owner(scenario):
    proc = doctor("--netns", scenario["netns"], "--plain")
    assert proc.returncode == 0, proc.stderr
    assert f"network namespace {scenario['netns']}" in proc.stdout
    assert f"pid {scenario['pid']} ({COMM}) holds {N_CLOSE_WAIT}" in proc.stdout


def test_save_proc_snapshot_reads_back_the_same(scenario, tmp_path):
    snap = tmp_path / "snap"
    live = doctor("--netns", scenario["netns"], "--save-proc", str(snap), "--json")
    assert live.returncode == 0, live.stderr
    assert f"written to {snap}" in live.stderr
    saved = doctor("--proc", str(snap), "--json")
    assert saved.returncode == 0, saved.stderr
    a, b = json.loads(live.stdout), json.loads(saved.stdout)
    assert b["states"] == a["states"]
    assert b["owners"] == a["owners"]
    assert b["tunables"] == a["tunables"]
    assert os.readlink(next((snap / str(scenario["pid"]) / "fd").iterdir())).startswith("socket:[")


def test_interval_samples_counters_twice(scenario):
    t0 = time.monotonic()
    report = examine(NetnsSource(scenario["netns"]), interval=0.3)
    assert time.monotonic() - t0 >= 0.3
    assert report.interval is not None and report.interval >= 0.3
    assert report.counters_delta is not None and report.counters_delta["ActiveOpens"] == 0
    assert report.states["CLOSE-WAIT"] == N_CLOSE_WAIT


def test_unknown_namespace_is_an_error():
    with pytest.raises(SourceError, match="no network namespace"):
        NetnsSource("tcpstack-doctor-does-not-exist")
    proc = doctor("--netns", "tcpstack-doctor-does-not-exist")
    assert proc.returncode == 1 and "no network namespace" in proc.stderr
