"""The control socket: a running stack answers ``ss``, ``stat`` and ``sysctl``.

A stack that runs in its own process (``tcpstack up``) listens on a Unix
stream socket.  The protocol is newline-delimited JSON, one request and one
response per line, any number of them per connection::

    -> {"cmd": "ss", "info": true}
    <- {"ok": true, "result": {"now_us": ..., "sockets": [...]}}
    -> {"cmd": "sysctl-set", "key": "net.ipv4.tcp_syncookies", "value": "2"}
    <- {"ok": false, "error": "tcp_syncookies must be between 0 and 2, got 3"}

Commands: ``ping``, ``ss``, ``stat``, ``sysctl-get``, ``sysctl-set``,
``sysctl-list`` (see :func:`handle`).

Who may connect: only the user who owns the socket.  The file is created with
mode 0600 (bind, chmod, then listen, so there is no moment when another user
could connect), and every accepted connection's SO_PEERCRED uid is checked
against the owner's; anyone else gets one ``{"ok": false, "error": ...}``
line and the connection is closed.

Consistency: a request is answered in one synchronous pass over the engine's
tables -- in the stack's own event loop (:class:`AioControlServer`) or under
the threaded driver's lock (:class:`ThreadedControlServer`, through
``Driver.call``) -- so a response is a snapshot of one instant.  No syscalls
per socket: 10,000 connections cost one walk of three dicts.

Paths: ``tcpstack up --netns NS`` uses ``/run/tcpstack/NS.sock``, or
``/tmp/tcpstack-UID/NS.sock`` (a private 0700 directory) when /run is not
writable; :func:`find_path` looks in the same places.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..tcp import Config, Stack, State
from ..tcp.timewait import TimeWaitView

__all__ = [
    "COMMANDS",
    "PROTOCOL_VERSION",
    "AioControlServer",
    "ControlError",
    "ThreadedControlServer",
    "bind_control_socket",
    "candidate_paths",
    "default_path",
    "find_path",
    "handle",
    "request",
    "ss_records",
    "stat_record",
    "sysctl_name",
]

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # the longest request line accepted (responses are not bounded)
MAX_CLIENTS = 64  # concurrent control connections per server
RUN_DIR = "/run/tcpstack"
REFUSAL_LINGER_S = 1.0  # how long a refused client may take to read why
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux

S = State


class ControlError(Exception):
    """A control request failed: no server, refused, or the server said no."""


# ---------------------------------------------------------------------- paths
def _tmp_dir() -> str:
    return f"/tmp/tcpstack-{os.geteuid()}"


def candidate_paths(netns: str) -> list[str]:
    """Where a stack serving ``netns`` puts its control socket, in order of preference."""
    name = netns.replace("/", "_")
    return [f"{RUN_DIR}/{name}.sock", f"{_tmp_dir()}/{name}.sock"]


def default_path(netns: str) -> str:
    """The path a new server should use: under /run if it is writable, else /tmp."""
    run, tmp = candidate_paths(netns)
    if os.access(RUN_DIR, os.W_OK | os.X_OK) or (
        not os.path.exists(RUN_DIR) and os.access("/run", os.W_OK | os.X_OK)
    ):
        return run
    return tmp


def find_path(netns: str) -> str:
    """The control socket of the stack serving ``netns``: the first candidate
    that exists (or the preferred one, for the error message)."""
    paths = candidate_paths(netns)
    for p in paths:
        if os.path.exists(p):
            return p
    return paths[0]


def _prepare_dir(path: str) -> None:
    d = os.path.dirname(path) or "."
    if d == RUN_DIR or d == _tmp_dir():
        # Our own directories: /run/tcpstack is root's (0755); the /tmp one is
        # private (0700) and must really be ours, not a trap someone else set.
        mode = 0o755 if d == RUN_DIR else 0o700
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, mode)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(
                errno.EPERM,
                f"{d} is not a directory owned by uid {os.geteuid()}; refusing to use it",
            )
        if d != RUN_DIR and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(d, 0o700)


def bind_control_socket(path: str, mode: int = 0o600) -> socket.socket:
    """A bound (not yet listening) Unix stream socket at ``path`` with ``mode``.

    A stale socket file (nobody listening) is replaced; a live one is an error
    (another stack is serving there), as is a path that is not a socket."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise OSError(
            errno.ENAMETOOLONG, f"control socket path is longer than {_SUN_PATH_MAX} bytes: {path}"
        )
    _prepare_dir(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(
                errno.EEXIST, f"{path} exists and is not a socket; refusing to replace it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: left by a stack that was killed
        else:
            raise OSError(errno.EADDRINUSE, f"{path} is in use: another tcpstack is serving there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Nobody can connect before listen(), so chmod here leaves no window.
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def refusal(uid: int, owner: int) -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"permission denied: this control socket belongs to uid {owner}; uid {uid} may not use it",
    }


# ---------------------------------------------------------------------- snapshots
#: ss's state filter words (ss(8) STATE-FILTER) -> RFC 9293 states.
_ALL = tuple(State)
STATE_GROUPS: dict[str, tuple[State, ...]] = {
    "all": _ALL,
    "connected": tuple(s for s in _ALL if s not in (S.LISTEN, S.CLOSED)),
    "synchronized": tuple(s for s in _ALL if s not in (S.LISTEN, S.CLOSED, S.SYN_SENT)),
    "bucket": (S.SYN_RECEIVED, S.TIME_WAIT),
    "big": tuple(s for s in _ALL if s not in (S.SYN_RECEIVED, S.TIME_WAIT)),
    "established": (S.ESTABLISHED,),
    "syn-sent": (S.SYN_SENT,),
    "syn-recv": (S.SYN_RECEIVED,),
    "fin-wait-1": (S.FIN_WAIT_1,),
    "fin-wait-2": (S.FIN_WAIT_2,),
    "time-wait": (S.TIME_WAIT,),
    "closed": (S.CLOSED,),
    "close-wait": (S.CLOSE_WAIT,),
    "last-ack": (S.LAST_ACK,),
    "listening": (S.LISTEN,),
    "listen": (S.LISTEN,),
    "closing": (S.CLOSING,),
}


def parse_states(words: Iterable[str]) -> set[State]:
    """ss's state words or RFC 9293 names (any case) -> states; ValueError names a bad one."""
    out: set[State] = set()
    for w in words:
        key = w.strip().lower().replace("_", "-")
        if key in STATE_GROUPS:
            out.update(STATE_GROUPS[key])
            continue
        try:
            out.add(State(w.strip().upper().replace("_", "-")))
        except ValueError:
            raise ValueError(
                f"unknown state {w!r}; one of: {', '.join(STATE_GROUPS)} or an RFC 9293 name"
            ) from None
    return out


_OPS: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _conditions(raw: Any) -> list[tuple[int, Callable[[int, int], bool], int]]:
    """[["sport"|"dport"|"port", op, port], ...] -> (field index in a 4-tuple, op, port);
    "port" (index -1) matches either side."""
    out = []
    for cond in raw or ():
        if not (isinstance(cond, list | tuple) and len(cond) == 3):
            raise ValueError(f"a port condition is [field, op, port], got {cond!r}")
        field, op, port = cond
        if field not in ("sport", "dport", "port"):
            raise ValueError(f"port condition field must be sport, dport or port, got {field!r}")
        if op not in _OPS:
            raise ValueError(f"port condition operator must be one of {' '.join(_OPS)}, got {op!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port!r}")
        out.append(({"sport": 1, "dport": 3, "port": -1}[field], _OPS[op], port))
    return out


def _ms_timer(name: str, at: int, now: int, retrans: int) -> dict[str, Any]:
    return {"name": name, "expires_us": max(0, at - now), "retrans": retrans}


def _conn_timer(c: Any, now: int) -> dict[str, Any] | None:
    """The timer ss -o shows for a connection, named as Linux's inet_diag does:
    "on" (retransmission), "persist" (zero-window probe), "keepalive", and
    "timewait" for an orphaned FIN-WAIT-2 (Linux keeps those as timewait socks).
    The delayed-ACK timer is not shown, as in Linux."""
    best: tuple[int, str, int] | None = None
    for at, name, n in (
        (c.rtx_at, "on", c.retries),
        (c.persist_at, "persist", c.persist_backoff),
        (c.keepalive_at, "keepalive", c.keepalive_probes),
        (c.fin2_at, "timewait", 0),
    ):
        if at is not None and (best is None or at < best[0]):
            best = (at, name, n)
    return None if best is None else _ms_timer(best[1], best[0], now, best[2])


def ss_records(
    stack: Stack,
    now: int,
    *,
    info: bool = False,
    timers: bool = False,
    states: Iterable[str] | None = None,
    ports: Any = None,
) -> list[dict[str, Any]]:
    """Every socket of ``stack`` as a plain dict, in one pass over its tables:
    listeners, half-open SYN-RECEIVED requests, connections, TIME-WAIT
    records.  ``states`` (ss words or RFC names) and ``ports`` (``[["sport",
    "==", 80]]``) filter; ``timers`` adds ``timer`` (ss -o), ``info`` adds
    ``timer`` and, for connections, ``info`` (Connection.info: tcp_info)."""
    want = parse_states(states) if states is not None else None
    conds = _conditions(ports)
    timers = timers or info

    def keep(state: State, key: Any) -> bool:
        if want is not None and state not in want:
            return False
        return all(
            op(key[i], port) if i >= 0 else (op(key[1], port) or op(key[3], port))
            for i, op, port in conds
        )

    out: list[dict[str, Any]] = []
    append = out.append
    want_listen = want is None or S.LISTEN in want
    want_synrecv = want is None or S.SYN_RECEIVED in want
    for lst in stack.listeners.values():
        addr = lst.local_addr or "*"
        if want_listen and keep(S.LISTEN, (addr, lst.local_port, "*", 0)):
            rec: dict[str, Any] = {
                "kind": "listener",
                "id": lst.conn_id,
                "state": S.LISTEN.value,
                "local_addr": addr,
                "local_port": lst.local_port,
                "remote_addr": "*",
                "remote_port": 0,
                # As ss shows a listener: Recv-Q is the accept queue, Send-Q the backlog.
                "recv_q": len(lst.accept_queue),
                "send_q": lst.backlog,
                "syn_queue": len(lst.requests),
                "accept_queue": len(lst.accept_queue),
                "backlog": lst.backlog,
            }
            if timers:
                rec["timer"] = None
            append(rec)
    # Half-open requests next (Linux keeps them in the established hash, so ss
    # lists them among the connections, after the listeners).
    if want_synrecv:
        for lst in stack.listeners.values():
            for key, req in lst.requests.items():
                if not keep(S.SYN_RECEIVED, key):
                    continue
                rec = {
                    "kind": "request",
                    "id": req.conn_id,
                    "state": S.SYN_RECEIVED.value,
                    "local_addr": key[0],
                    "local_port": key[1],
                    "remote_addr": key[2],
                    "remote_port": key[3],
                    "recv_q": 0,
                    "send_q": 0,
                }
                if timers:
                    rec["timer"] = (
                        None
                        if req.timer_at is None
                        else _ms_timer("on", req.timer_at, now, req.retries)
                    )
                append(rec)
    for key, c in stack.conns.items():
        st = c.state
        if not keep(st, key):
            continue
        rec = {
            "kind": "connection",
            "id": c.conn_id,
            "state": st.value,
            "local_addr": key[0],
            "local_port": key[1],
            "remote_addr": key[2],
            "remote_port": key[3],
            "recv_q": c.recvbuf.ready,
            "send_q": len(c.sendbuf),
        }
        if timers:
            rec["timer"] = _conn_timer(c, now)
        if info:
            i = c.info(now)
            # The top-level "timer" (named as ss names it) replaces info's own.
            i.pop("timer", None)
            i.pop("timer_expires_us", None)
            i.pop("state", None)
            rec["info"] = i
        append(rec)
    if want is None or S.TIME_WAIT in want:
        tw_state = S.TIME_WAIT.value
        # The engine's TIME-WAIT records are packed bytes; Stack.sockets() gives
        # their ss view (TimeWaitView) after the listeners and connections.
        for tw in stack.sockets()[len(stack.listeners) + len(stack.conns) :]:
            if not isinstance(tw, TimeWaitView):
                continue
            key = tw.key
            if conds and not keep(S.TIME_WAIT, key):
                continue
            rec = {
                "kind": "time-wait",
                "id": tw.conn_id,
                "state": tw_state,
                "local_addr": key[0],
                "local_port": key[1],
                "remote_addr": key[2],
                "remote_port": key[3],
                "recv_q": 0,
                "send_q": 0,
            }
            if timers:
                rec["timer"] = _ms_timer("timewait", tw.expires, now, 0)
            append(rec)
    return out


def stat_record(stack: Stack) -> dict[str, Any]:
    """``states``: RFC 9293 name -> count (all eleven); ``mib``: nstat name -> value."""
    return {"states": stack.state_counts(), "mib": stack.mib.nstat()}


def sysctl_name(key: str) -> str:
    """The full sysctl name of a tunable: net.core.somaxconn,
    net.ipv6.conf.all.hop_limit, net.ipv4.everything else."""
    name = Config.key_name(key)
    if name == "hop_limit":
        return "net.ipv6.conf.all.hop_limit"
    return f"net.core.{name}" if name == "somaxconn" else f"net.ipv4.{name}"


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------------- requests
def _cmd_ping(stack: Stack, req: dict[str, Any], now: int) -> Any:
    return {
        "protocol": PROTOCOL_VERSION,
        "name": stack.name,
        "pid": os.getpid(),
        "addresses": list(stack.addresses),
        "now_us": now,
    }


def _cmd_ss(stack: Stack, req: dict[str, Any], now: int) -> Any:
    states = req.get("states")
    if states is not None and not (
        isinstance(states, list) and all(isinstance(s, str) for s in states)
    ):
        raise ValueError("states must be a list of state names")
    return {
        "now_us": now,
        "sockets": ss_records(
            stack,
            now,
            info=bool(req.get("info")),
            timers=bool(req.get("timers")),
            states=states,
            ports=req.get("ports"),
        ),
    }


def _cmd_stat(stack: Stack, req: dict[str, Any], now: int) -> Any:
    return {"now_us": now, **stat_record(stack)}


def _key(req: dict[str, Any]) -> str:
    key = req.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ValueError('missing "key" (a tunable name such as net.ipv4.tcp_syncookies)')
    return key


def _cmd_sysctl_get(stack: Stack, req: dict[str, Any], now: int) -> Any:
    key = _key(req)
    return {"name": sysctl_name(key), "value": _jsonable(stack.config.get(key))}


def _cmd_sysctl_set(stack: Stack, req: dict[str, Any], now: int) -> Any:
    key = _key(req)
    if "value" not in req:
        raise ValueError(f'missing "value" for {key}')
    stack.config.set(key, req["value"])
    return {"name": sysctl_name(key), "value": _jsonable(stack.config.get(key))}


def _cmd_sysctl_list(stack: Stack, req: dict[str, Any], now: int) -> Any:
    cfg = stack.config
    return {"values": {sysctl_name(n): _jsonable(getattr(cfg, n)) for n in cfg.names()}}


COMMANDS: dict[str, Callable[[Stack, dict[str, Any], int], Any]] = {
    "ping": _cmd_ping,
    "ss": _cmd_ss,
    "stat": _cmd_stat,
    "sysctl-get": _cmd_sysctl_get,
    "sysctl-set": _cmd_sysctl_set,
    "sysctl-list": _cmd_sysctl_list,
}


def parse_request(line: bytes | str) -> dict[str, Any]:
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad request: not JSON ({exc})") from None
    if not isinstance(req, dict):
        raise ValueError('bad request: a request is a JSON object with "cmd"')
    return req


def handle(stack: Stack, req: dict[str, Any], now: int) -> dict[str, Any]:
    """Answer one request: ``{"ok": true, "result": ...}`` or ``{"ok": false,
    "error": "..."}``.  Never raises: a bad request is an error response."""
    cmd = req.get("cmd")
    fn = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if fn is None:
        return {"ok": False, "error": f"unknown command {cmd!r}; one of: {', '.join(COMMANDS)}"}
    try:
        return {"ok": True, "result": fn(stack, req, now)}
    except KeyError as exc:  # Config's unknown key: the message is the argument
        return {"ok": False, "error": str(exc.args[0]) if exc.args else "unknown key"}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug must not take the stack down with it
        return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


def encode(resp: dict[str, Any]) -> bytes:
    return json.dumps(resp, separators=(",", ":")).encode() + b"\n"


CHUNK_RECORDS = 256  # socket records encoded per slice of a large response


def encode_chunks(resp: dict[str, Any], chunk: int = CHUNK_RECORDS) -> Iterator[bytes]:
    """``encode(resp)`` in slices: a response with a ``sockets`` list is encoded
    ``chunk`` records at a time, so that a server can let its event loop run
    between slices (the snapshot is already taken: it is plain data)."""
    result = resp.get("result")
    socks = result.get("sockets") if resp.get("ok") and isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(socks, list) or len(socks) <= chunk:
        yield encode(resp)
        return
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    head = dumps({k: v for k, v in result.items() if k != "sockets"})
    yield (
        '{"ok":true,"result":' + head[:-1] + ("," if len(head) > 2 else "") + '"sockets":['
    ).encode()
    for i in range(0, len(socks), chunk):
        part = dumps(socks[i : i + chunk])[1:-1]
        yield ((",") + part if i else part).encode()
    yield b"]}}\n"


# ---------------------------------------------------------------------- servers
@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic GC while a snapshot is built: its tens of thousands of fresh
    dicts hold no cycles (refcounting frees them), yet their allocation would
    set off a full collection of the whole heap inside the snapshot.  A
    collection that is due runs later, after the loop has had its turn."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class AioControlServer:
    """The control server inside the stack's own asyncio loop::

        srv = await AioControlServer.start(host.stack, path, now=host.driver.now)
        ...
        srv.close()        # stops serving, drops clients, removes the socket file

    Each request is answered synchronously in a loop callback, so the engine
    cannot change while the response is built.  ``after_set`` (optional) runs
    after a successful sysctl-set (e.g. the driver's ``changed``)."""

    def __init__(
        self,
        stack: Stack,
        path: str,
        now: Callable[[], int],
        *,
        mode: int = 0o600,
        after_set: Callable[[], None] | None = None,
    ) -> None:
        self.stack = stack
        self.path = path
        self.now = now
        self.mode = mode
        self.after_set = after_set
        self.owner = os.geteuid()
        self.requests = 0
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._ino: int | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(
        cls, stack: Stack, path: str, now: Callable[[], int], **kw: Any
    ) -> AioControlServer:
        self = cls(stack, path, now, **kw)
        sock = bind_control_socket(path, self.mode)
        try:
            self._ino = os.stat(path).st_ino
            self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        return self

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        with _no_gc():
            resp = handle(self.stack, req, self.now())
        if resp["ok"] and req.get("cmd") == "sysctl-set" and self.after_set is not None:
            self.after_set()
        return resp

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = parse_request(line)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return self.run(req)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
            if uid != self.owner:
                self.refused += 1
                writer.write(encode(refusal(uid, self.owner)))
                await writer.drain()
                # Half-close and discard what the client sent (briefly), so that its
                # request does not turn our close into a reset before it reads why.
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REFUSAL_LINGER_S):
                        while await reader.read(65536):
                            pass
                return
            if len(self._clients) >= MAX_CLIENTS:
                writer.write(
                    encode(
                        {"ok": False, "error": f"too many control connections (max {MAX_CLIENTS})"}
                    )
                )
                await writer.drain()
                return
            if task is not None:
                self._clients.add(task)
            self._writers.add(writer)
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than the limit
                    writer.write(
                        encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                    )
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                # The answer is built in one go (a consistent snapshot); a large one
                # is then written in slices, letting the loop (the stack) run between.
                for part in encode_chunks(self._answer(line)):
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            self._writers.discard(writer)
            writer.close()

    def _unlink(self) -> None:
        # Remove the file only if it is still the one we bound.
        with contextlib.suppress(OSError):
            if self._ino is None or os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)

    def close(self) -> None:
        """Stop serving, drop the clients, remove the socket file.  Idempotent."""
        if self._server is not None:
            server, self._server = self._server, None
            try:
                server.close()
            except TypeError:
                # close() from another thread than the server's loop can race with the
                # last client detaching there: CPython 3.11's Server then runs _wakeup()
                # twice (its waiter list is None the second time).  The listening socket
                # is already stopped by then, so nothing is lost.
                pass
            self._unlink()
        for w in list(self._writers):
            w.close()
        for t in list(self._clients):
            t.cancel()

    async def __aenter__(self) -> AioControlServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ThreadedControlServer:
    """The control server for the threaded :class:`~.driver.Driver`: a thread
    accepts, one short-lived thread per client reads requests, and each request
    runs through ``driver.call`` (under the driver's lock), so it sees the
    engine at one instant.  JSON is encoded outside the lock."""

    def __init__(self, driver: Any, path: str, *, mode: int = 0o600) -> None:
        self.driver = driver
        self.path = path
        self.owner = os.geteuid()
        self.requests = 0
        self.refused = 0
        self._sock = bind_control_socket(path, mode)
        self._ino = os.stat(path).st_ino
        self._sock.listen(16)
        self._sock.settimeout(0.2)  # accept() wakes up to notice close()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="tcpstack-control", daemon=True)
        self._thread.start()

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        stack = self.driver.stack

        def answer(now: int) -> dict[str, Any]:
            with _no_gc():
                return handle(stack, req, now)

        try:
            return self.driver.call(answer)
        except OSError as exc:  # the driver stopped
            return {"ok": False, "error": str(exc)}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.sendall(
                        encode(
                            {
                                "ok": False,
                                "error": f"too many control connections (max {MAX_CLIENTS})",
                            }
                        )
                    )
                conn.close()
                continue
            threading.Thread(
                target=self._client, args=(conn,), name="tcpstack-control-client", daemon=True
            ).start()

    def _client(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            conn.settimeout(None)
            uid = peer_uid(conn)
            if uid != self.owner:
                self.refused += 1
                conn.sendall(encode(refusal(uid, self.owner)))
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(REFUSAL_LINGER_S)
                with contextlib.suppress(OSError):
                    for _ in range(64):  # discard the client's request, bounded
                        if not conn.recv(65536):
                            break
                return
            f = conn.makefile("rb")
            while not self._stop.is_set():
                line = f.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE:
                    conn.sendall(
                        encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                    )
                    return
                if line.strip():
                    try:
                        resp = self.run(parse_request(line))
                    except ValueError as exc:
                        resp = {"ok": False, "error": str(exc)}
                    for part in encode_chunks(resp):  # outside the driver's lock
                        conn.sendall(part)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, drop the clients, remove the socket file.  Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout)
        self._sock.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)

    def __enter__(self) -> ThreadedControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- client
class ControlClient:
    """One connection to a control socket; ``call(cmd, **args)`` returns the
    result or raises :class:`ControlError` with a message for a human."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            self.sock.close()
            raise ControlError(
                f"no control socket at {path} (is `tcpstack up` running? "
                "give its --netns or --control)"
            ) from None
        except ConnectionRefusedError:
            self.sock.close()
            raise ControlError(
                f"nothing is listening on {path} (a stale socket of a stopped tcpstack?)"
            ) from None
        except PermissionError:
            self.sock.close()
            owner = _owner(path)
            raise ControlError(
                f"permission denied: {path} belongs to {owner}; run as that user "
                f"(you are uid {os.geteuid()})"
            ) from None
        except OSError as exc:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self._file = self.sock.makefile("rb")

    def call(self, cmd: str, **args: Any) -> Any:
        try:
            try:
                self.sock.sendall(encode({"cmd": cmd, **args}))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server hung up, perhaps after saying why: read it
            line = self._file.readline()
        except TimeoutError:
            raise ControlError(f"no answer from {self.path} (timed out)") from None
        except OSError as exc:
            raise ControlError(
                f"control connection to {self.path} failed: {exc.strerror or exc}"
            ) from None
        if not line:
            raise ControlError(f"{self.path} closed the connection without an answer")
        try:
            resp = json.loads(line)
        except ValueError:
            raise ControlError(f"{self.path} answered something that is not JSON") from None
        if not resp.get("ok"):
            raise ControlError(str(resp.get("error", "request failed")))
        return resp.get("result")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "another user"
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def request(path: str, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
    """One request on a fresh connection (see :class:`ControlClient`)."""
    with ControlClient(path, timeout) as c:
        return c.call(cmd, **args)
