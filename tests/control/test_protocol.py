"""The control protocol: requests and responses, the servers, the client, who may connect."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from tcpstack.runtime.control import (
    ControlClient,
    ControlError,
    ThreadedControlServer,
    bind_control_socket,
    candidate_paths,
    default_path,
    encode,
    encode_chunks,
    find_path,
    handle,
    request,
)
from tcpstack.runtime.host import LoopbackHost
from tcpstack.tcp import Config

from .conftest import LoopThread, require_root
from .lab import Lab, many_connections

NOBODY = 65534


def _raw(path: str, payload: bytes, timeout: float = 5.0) -> list[dict]:
    """Send raw bytes, read response lines until the server closes or stays quiet."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


# ---------------------------------------------------------------------- handle()
def test_handle_answers_each_command(lab: Lab) -> None:
    st = lab.server
    ping = handle(st, {"cmd": "ping"}, lab.now)
    assert ping["ok"] and ping["result"]["protocol"] == 1 and ping["result"]["name"] == "server"
    ss = handle(st, {"cmd": "ss"}, lab.now)["result"]
    assert ss["now_us"] == lab.now and len(ss["sockets"]) == 7
    assert "info" not in ss["sockets"][3] and "timer" not in ss["sockets"][3]
    assert "info" in handle(st, {"cmd": "ss", "info": True}, lab.now)["result"]["sockets"][3]
    stat_ = handle(st, {"cmd": "stat"}, lab.now)["result"]
    assert stat_["states"]["TIME-WAIT"] == 1 and stat_["mib"]["TcpPassiveOpens"] == 4
    assert handle(st, {"cmd": "sysctl-get", "key": "tcp_syncookies"}, lab.now) == {
        "ok": True,
        "result": {"name": "net.ipv4.tcp_syncookies", "value": 1},
    }
    assert handle(
        st, {"cmd": "sysctl-set", "key": "net.ipv4.tcp_syncookies", "value": "2"}, lab.now
    ) == {"ok": True, "result": {"name": "net.ipv4.tcp_syncookies", "value": 2}}
    assert st.config.tcp_syncookies == 2
    values = handle(st, {"cmd": "sysctl-list"}, lab.now)["result"]["values"]
    assert values["net.ipv4.tcp_syncookies"] == 2
    assert values["net.core.somaxconn"] == 4096
    assert values["net.ipv4.tcp_rmem"] == [4096, 131072, 6291456]
    assert len(values) == len(Config.names())


def test_handle_sets_vectors_from_text(lab: Lab) -> None:
    r = handle(
        lab.server,
        {"cmd": "sysctl-set", "key": "ip_local_port_range", "value": "40000\t50000"},
        lab.now,
    )
    assert r == {
        "ok": True,
        "result": {"name": "net.ipv4.ip_local_port_range", "value": [40000, 50000]},
    }


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (
            {"cmd": "nope"},
            "unknown command 'nope'; one of: ping, ss, stat, sysctl-get, sysctl-set, sysctl-list",
        ),
        ({}, "unknown command None"),
        ({"cmd": "sysctl-get"}, 'missing "key"'),
        (
            {"cmd": "sysctl-get", "key": "tcp_bogus"},
            "unknown tunable 'tcp_bogus'; see `tcpstack sysctl -a` for the list",
        ),
        ({"cmd": "sysctl-set", "key": "tcp_syncookies"}, 'missing "value" for tcp_syncookies'),
        (
            {"cmd": "sysctl-set", "key": "tcp_syncookies", "value": "3"},
            "tcp_syncookies must be between 0 and 2, got 3",
        ),
        (
            {"cmd": "sysctl-set", "key": "tcp_syncookies", "value": "many"},
            "tcp_syncookies takes an integer, got 'many'",
        ),
        (
            {"cmd": "sysctl-set", "key": "net.ipv4.tcp_tw_recycle", "value": "1"},
            "tcp_tw_recycle is refused: tcp_tw_recycle was removed from Linux in 4.12",
        ),
        ({"cmd": "ss", "states": ["nonsense"]}, "unknown state 'nonsense'"),
        ({"cmd": "ss", "states": "established"}, "states must be a list"),
        ({"cmd": "ss", "ports": [["sport", "==", 70000]]}, "port must be 0..65535"),
    ],
)
def test_handle_errors_are_responses_never_exceptions(lab: Lab, req: dict, error: str) -> None:
    r = handle(lab.server, req, lab.now)
    assert r["ok"] is False
    assert r["error"].startswith(error)
    assert lab.server.config.tcp_syncookies == 1  # nothing was set


# ---------------------------------------------------------------------- the asyncio server
def test_aio_server_socket_is_owner_only_and_removed_on_close(served) -> None:  # type: ignore[no-untyped-def]
    lab, path, srv = served
    st = os.stat(path)
    assert (
        stat.S_ISSOCK(st.st_mode)
        and stat.S_IMODE(st.st_mode) == 0o600
        and st.st_uid == os.geteuid()
    )
    assert request(path, "ping")["name"] == "server"
    srv.close()
    assert not os.path.exists(path)
    with pytest.raises(ControlError, match="no control socket at"):
        request(path, "ping")


def test_aio_server_many_requests_on_one_connection(served) -> None:  # type: ignore[no-untyped-def]
    lab, path, srv = served
    with ControlClient(path) as c:
        for _ in range(20):
            assert c.call("stat")["states"]["LISTEN"] == 2
        assert len(c.call("ss", states=["established"])["sockets"]) == 2
        with pytest.raises(ControlError, match="unknown tunable"):
            c.call("sysctl-get", key="nope")
        assert c.call("ping")["protocol"] == 1  # an error does not end the session
    assert srv.requests == 23


def test_aio_server_bad_lines(served) -> None:  # type: ignore[no-untyped-def]
    lab, path, srv = served
    out = _raw(path, b'not json\n\n[1, 2]\n{"cmd": "ping"}\n')
    assert [r["ok"] for r in out] == [False, False, True]
    assert out[0]["error"].startswith("bad request: not JSON")
    assert out[1]["error"] == 'bad request: a request is a JSON object with "cmd"'


def test_aio_server_refuses_overlong_request(served) -> None:  # type: ignore[no-untyped-def]
    lab, path, srv = served
    out = _raw(path, b'{"cmd": "ping", "pad": "' + b"x" * (1 << 20) + b'"}\n')
    assert out == [{"ok": False, "error": "request longer than 1048576 bytes"}]
    assert request(path, "ping")["protocol"] == 1


def test_after_set_hook_runs_on_successful_set(
    lab: Lab, loop_thread: LoopThread, sockdir: Path
) -> None:
    calls: list[int] = []
    srv = loop_thread.serve(
        lab.server, str(sockdir / "c.sock"), lambda: lab.now, after_set=lambda: calls.append(1)
    )
    try:
        request(srv.path, "sysctl-set", key="tcp_sack", value="0")
        with pytest.raises(ControlError):
            request(srv.path, "sysctl-set", key="tcp_sack", value="9")
        assert calls == [1]
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)


def test_encode_chunks_is_encode_in_slices(lab: Lab) -> None:
    small = handle(lab.server, {"cmd": "ss", "info": True}, lab.now)
    assert list(encode_chunks(small)) == [encode(small)]
    big = {
        "ok": True,
        "result": {"now_us": 5, "sockets": [{"n": i, "s": "x"} for i in range(1000)]},
    }
    parts = list(encode_chunks(big, chunk=100))
    assert len(parts) == 12 and b"".join(parts) == encode(big)
    only = {"ok": True, "result": {"sockets": [{"n": i} for i in range(10)]}}
    assert b"".join(encode_chunks(only, chunk=3)) == encode(only)
    err = {"ok": False, "error": "x"}
    assert list(encode_chunks(err)) == [encode(err)]


def test_aio_server_large_answer_in_slices(loop_thread: LoopThread, sockdir: Path) -> None:
    lab = many_connections(700)
    path = str(sockdir / "big.sock")
    srv = loop_thread.serve(lab.server, path, lambda: lab.now)
    try:
        with ControlClient(path) as c:
            socks = c.call("ss", info=True)["sockets"]
            assert len(socks) == 701
            assert sorted(s["remote_port"] for s in socks[1:]) == list(range(20000, 20700))
            assert all(
                s["state"] == "ESTABLISHED" and s["info"]["rtt"] == 10_000 for s in socks[1:]
            )
            assert c.call("stat")["states"]["ESTABLISHED"] == 700  # the session goes on
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)


# ---------------------------------------------------------------------- socket files
def test_stale_socket_is_replaced_live_one_refused_other_files_kept(sockdir: Path) -> None:
    path = str(sockdir / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a killed stack leaves
    s1 = bind_control_socket(path)
    s1.listen(1)
    try:
        with pytest.raises(OSError, match="in use: another tcpstack is serving there"):
            bind_control_socket(path)
    finally:
        s1.close()
    plain = sockdir / "plain"
    plain.write_text("keep me")
    with pytest.raises(OSError, match="exists and is not a socket"):
        bind_control_socket(str(plain))
    assert plain.read_text() == "keep me"
    with pytest.raises(OSError, match="longer than 107 bytes"):
        bind_control_socket(str(sockdir / ("x" * 120)))


def test_default_paths() -> None:
    run, tmp = candidate_paths("tcpstack-0")
    assert run == "/run/tcpstack/tcpstack-0.sock"
    assert tmp == f"/tmp/tcpstack-{os.geteuid()}/tcpstack-0.sock"
    assert default_path("tcpstack-0") in (run, tmp)
    assert (
        find_path(f"tcpstack-nothing-{os.getpid()}")
        == f"/run/tcpstack/tcpstack-nothing-{os.getpid()}.sock"
    )


def test_client_errors_are_clear(sockdir: Path) -> None:
    with pytest.raises(ControlError, match=r"no control socket at .*is `tcpstack up` running"):
        request(str(sockdir / "none.sock"), "ping")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sockdir / "dead.sock"))
    dead.close()
    with pytest.raises(ControlError, match="nothing is listening on .*stale socket"):
        request(str(sockdir / "dead.sock"), "ping")


# ---------------------------------------------------------------------- the threaded server
class _FakeDriver:
    """The part of Driver the threaded server uses: ``stack`` and ``call(fn)``."""

    def __init__(self, lab: Lab) -> None:
        self.stack = lab.server
        self.lab = lab
        self.calls = 0

    def call(self, fn):  # type: ignore[no-untyped-def]
        self.calls += 1
        return fn(self.lab.now)


def test_threaded_server_runs_each_request_through_driver_call(lab: Lab, sockdir: Path) -> None:
    drv = _FakeDriver(lab)
    path = str(sockdir / "t.sock")
    with ThreadedControlServer(drv, path) as srv:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with ControlClient(path) as c:
            assert len(c.call("ss")["sockets"]) == 7
            assert c.call("sysctl-set", key="tcp_fin_timeout", value="30")["value"] == 30
        out = _raw(path, b"garbage\n")
        assert out[0]["ok"] is False
        assert drv.calls == 2 and srv.requests == 2
    assert not os.path.exists(path)
    assert lab.server.config.tcp_fin_timeout == 30


def test_threaded_server_on_a_real_driver(sockdir: Path) -> None:
    """LoopbackHost: the threaded Driver in real time; a connection to itself shows up
    twice (both ends), in ESTABLISHED, through Driver.call."""
    from tcpstack import socket as tsocket

    with LoopbackHost(("198.18.0.2",), seed=3) as host:
        lst = tsocket.socket(driver=host)
        lst.bind(("198.18.0.2", 7))
        lst.listen(8)
        cli = tsocket.create_connection(("198.18.0.2", 7), timeout=5, driver=host)
        srv_conn, _ = lst.accept()
        path = str(sockdir / "real.sock")
        with ThreadedControlServer(host.driver, path):
            r = request(path, "ss", info=True)
            states = sorted(s["state"] for s in r["sockets"])
            assert states == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
            assert request(path, "stat")["states"]["ESTABLISHED"] == 2
        for s in (cli, srv_conn, lst):
            s.close()
        host.driver.stop()
        with ThreadedControlServer(host.driver, path):
            with pytest.raises(ControlError, match="Network is down"):
                request(path, "stat")


# ---------------------------------------------------------------------- who may connect
def _connect_as(uid: int, path: str) -> dict:
    """Fork; the child drops to ``uid`` and tries one ping; its outcome comes back as JSON."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stdlib calls only, then _exit
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError as exc:
                out = {"connect_error": exc.errno}
            else:
                s.sendall(b'{"cmd": "ping"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                out = {"response": json.loads(data) if data else None}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"child_error": repr(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    deadline = time.monotonic() + 15
    while chunk := os.read(r, 65536):
        data += chunk
        if time.monotonic() > deadline:
            break
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def test_other_user_cannot_connect_to_the_0600_socket(served) -> None:  # type: ignore[no-untyped-def]
    require_root("the permission test (it runs a client as uid 65534)")
    lab, path, srv = served
    out = _connect_as(NOBODY, path)
    assert out == {"connect_error": 13}  # EACCES: mode 0600
    assert request(path, "ping")["protocol"] == 1  # the owner still can


def test_peercred_check_refuses_other_uids_even_if_the_mode_lets_them_in(
    lab: Lab, loop_thread: LoopThread, sockdir: Path
) -> None:
    require_root("the permission test (it runs a client as uid 65534)")
    path = str(sockdir / "open.sock")
    srv = loop_thread.serve(
        lab.server, path, lambda: lab.now, mode=0o666
    )  # as if someone chmod'ed it
    try:
        out = _connect_as(NOBODY, path)
        assert out == {
            "response": {
                "ok": False,
                "error": (
                    f"permission denied: this control socket belongs to uid {os.geteuid()}; uid {NOBODY} may not use it"
                ),
            }
        }
        assert srv.refused == 1 and srv.requests == 0
    finally:
        loop_thread.loop.call_soon_threadsafe(srv.close)


def test_threaded_server_peercred_check(lab: Lab, sockdir: Path) -> None:
    require_root("the permission test (it runs a client as uid 65534)")
    path = str(sockdir / "open-t.sock")
    with ThreadedControlServer(_FakeDriver(lab), path, mode=0o666) as srv:
        out = _connect_as(NOBODY, path)
        assert (
            out["response"]["ok"] is False
            and "uid 65534 may not use it" in out["response"]["error"]
        )
        assert srv.refused == 1 and srv.requests == 0


def test_cli_as_another_user_says_permission_denied(served) -> None:  # type: ignore[no-untyped-def]
    """`tcpstack ss` run by uid 65534 (forked, not exec'ed: the interpreter may live
    where that user cannot read): exit status 1 and one clear line on stderr."""
    require_root("the permission test (it runs `tcpstack ss` as uid 65534)")
    from tcpstack.cli.main import main

    lab, path, srv = served
    # Import everything the command needs now: after setuid the child may not
    # be able to read the interpreter's own library.
    assert main(["ss", "--control", path + ".none"]) == 1
    import pwd  # noqa: F401 - used by the permission message

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        rc = 99
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest replaced sys.stdout/err
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            rc = main(["ss", "--control", path])
        except BaseException as exc:  # noqa: BLE001 - shown in the assertion
            os.write(2, f"child failed: {exc!r}".encode())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1, out
    assert out.decode() == (
        f"tcpstack ss: permission denied: {path} belongs to uid {os.geteuid()} (root); "
        f"run as that user (you are uid {NOBODY})\n"
    )
