"""packetdrill-syntax scripts, run against tcpstack (virtual time) or the Linux kernel.

    from tcpstack.script import run_file
    result = run_file("tests/scripts/handshake/passive-open.pkt")            # tcpstack
    result = run_file("tests/scripts/handshake/passive-open.pkt", kernel=True)  # Linux, needs root

The language is packetdrill's (google/packetdrill); docs/scripts.md is the
guide.  ``lexer``/``parser`` turn text into a ``model.Script``; ``run.Runner``
walks its events against a host: ``virtual.VirtualHost`` (the engine, in
virtual time) or ``kernel.KernelHost`` (real sockets in a namespace, packets
through a TUN device).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from .model import Script, ScriptError
from .parser import parse_file, parse_script
from .run import Outcome, Runner, RunResult, ScriptFailure

__all__ = [
    "Outcome",
    "RunResult",
    "Script",
    "ScriptError",
    "ScriptFailure",
    "find_scripts",
    "parse_file",
    "parse_script",
    "run_file",
    "run_script",
]


def run_script(script: Script, *, kernel: bool = False, verbose: Callable[[str], None] | None = None,
               netns: str | None = None, ip_version: str | None = None) -> RunResult:
    """Run a parsed script against tcpstack (default) or the Linux kernel; ``ip_version``
    (ipv4, ipv6, ipv4-mapped-ipv6) applies unless the script names its own."""
    from .corpus import make_host

    return Runner(script, make_host(kernel, netns), verbose=verbose, ip_version=ip_version).run()


def run_file(path: str, *, kernel: bool = False, verbose: Callable[[str], None] | None = None,
             netns: str | None = None, ip_version: str | None = None) -> RunResult:
    """Parse and run one file; a parse error becomes an ERROR result."""
    try:
        script = parse_file(path)
    except ScriptError as exc:
        return RunResult(path, "linux" if kernel else "tcpstack", Outcome.ERROR, str(exc), exc.line)
    except OSError as exc:
        return RunResult(path, "linux" if kernel else "tcpstack", Outcome.ERROR, f"{path}: {exc}")
    return run_script(script, kernel=kernel, verbose=verbose, netns=netns, ip_version=ip_version)


def find_scripts(paths: Iterable[str]) -> Iterator[str]:
    """Every *.pkt file named or under the directories named, sorted per directory."""
    for p in paths:
        if os.path.isdir(p):
            found: list[str] = []
            for root, _dirs, files in os.walk(p):
                found.extend(os.path.join(root, f) for f in files if f.endswith(".pkt"))
            yield from sorted(found)
        else:
            yield p
