"""Running things as an unprivileged user (uid/gid 65534, no capabilities), for the
tests that check what tcpstack says when it lacks the privileges it needs.

Two ways: ``run_as_nobody`` forks and drops privileges in the child, then calls
a Python function (no interpreter to exec, so it works wherever Python is
installed); ``cli_as_nobody`` execs the real ``tcpstack`` command line with
``setpriv``, as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tcpstack

NOBODY = 65534
# setpriv: real and effective uid/gid 65534, no supplementary groups, no capability
# left in any set (so the exec'd process has none, whatever file capabilities say).
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           "--inh-caps=-all", "--bounding-set=-all"]


def run_as_nobody(fn: Callable[[], list[Any]], timeout: float = 30.0) -> list[Any]:
    """Run ``fn`` in a forked child that dropped to uid/gid 65534 (no capabilities left).

    Forking (rather than exec'ing an interpreter as nobody) keeps the test
    independent of where Python is installed and whether nobody may read it.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            out = fn()
            os.write(wfd, json.dumps(out).encode())
            code = 0
        except BaseException as e:
            os.write(wfd, json.dumps([f"child crashed: {type(e).__name__}: {e}"]).encode())
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"unprivileged child did not finish in {timeout}s")
        with os.fdopen(rfd, "rb") as r:
            rfd = -1
            return json.loads(r.read() or b"[]")
    finally:
        if rfd >= 0:
            os.close(rfd)


def cli_as_nobody(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m tcpstack.cli.main ARGV`` exec'd as uid 65534 with no capabilities.

    The project's source directory goes in PYTHONPATH (the command must import
    this checkout's tcpstack); cwd is ``/``.  Fails, saying why, when uid 65534
    cannot run this interpreter or read the sources at all.
    """
    src = str(Path(tcpstack.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    probe = subprocess.run([*SETPRIV, sys.executable, "-c", "import os, tcpstack.cli.main; print(os.geteuid())"],
                           capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False)
    assert probe.returncode == 0 and probe.stdout.split() == [str(NOBODY)], (
        f"uid {NOBODY} cannot run {sys.executable} with PYTHONPATH={src} (make both readable "
        f"by others): {probe.stderr[-1000:]}")
    return subprocess.run([*SETPRIV, sys.executable, "-m", "tcpstack.cli.main", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd="/", check=False)
