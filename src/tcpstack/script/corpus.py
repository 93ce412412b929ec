"""Running many scripts with their recorded expectations (the corpus's header comments).

A script's header may say::

    // tcpstack-deviation: <what tcpstack does differently from Linux, and why>
    // tcpstack-only: <why this script cannot run against the kernel>

A deviation script must *fail* on tcpstack (strictly: if it starts passing,
the deviation was fixed and the header must go), and pass on Linux.  A
tcpstack-only script is skipped with ``--kernel``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .model import ScriptError
from .parser import parse_file
from .run import Host, Outcome, Runner, RunResult


@dataclass
class Verdict:
    result: RunResult
    expected: str  # "pass", "fail" (deviation), "skip"
    verdict: str  # "pass", "fail", "xfail" (deviation fails as recorded), "xpass", "skip", "error"
    reason: str = ""  # the header's text for deviations and skips
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "xfail", "skip")


def run_one(path: str, *, kernel: bool = False, verbose: Callable[[str], None] | None = None,
            honour_headers: bool = True, retries: int = 0, ip_version: str | None = None) -> Verdict:
    """Run one script; with ``retries``, a run that failed only on timing is repeated
    (real time is shared with the rest of the machine: a timing error that does not
    repeat is scheduling noise, not the target's behaviour).  ``ip_version`` is
    packetdrill's --ip_version for a script that does not name its own."""
    v = _run_once(path, kernel, verbose, honour_headers, ip_version)
    for _ in range(retries):
        if v.ok or v.verdict != "fail" or "timing error" not in v.result.message:
            break
        v = _run_once(path, kernel, verbose, honour_headers, ip_version)
        v.attempts += 1
    return v


def _run_once(path: str, kernel: bool, verbose: Callable[[str], None] | None, honour_headers: bool,
              ip_version: str | None = None) -> Verdict:
    target = "linux" if kernel else "tcpstack"
    try:
        script = parse_file(path)
    except (ScriptError, OSError) as exc:
        return Verdict(RunResult(path, target, Outcome.ERROR, str(exc)), "pass", "error")
    expected, reason = "pass", ""
    if honour_headers:
        if kernel and "only" in script.header:
            return Verdict(RunResult(path, target, Outcome.PASS, "skipped"), "skip", "skip", script.header["only"])
        if not kernel and "deviation" in script.header:
            expected, reason = "fail", script.header["deviation"]
    result = Runner(script, make_host(kernel), verbose=verbose, ip_version=ip_version).run()
    if result.outcome is Outcome.ERROR:
        verdict = "error"
    elif expected == "pass":
        verdict = "pass" if result.passed else "fail"
    else:
        verdict = "xfail" if result.outcome is Outcome.FAIL else "xpass"
    return Verdict(result, expected, verdict, reason)


def make_host(kernel: bool, netns: str | None = None) -> Host:
    """tcpstack in virtual time, or the Linux kernel in a namespace of its own."""
    if kernel:
        from .kernel import KernelHost

        return KernelHost(netns=netns)
    from .virtual import VirtualHost

    return VirtualHost()


def run_many(paths: Iterable[str], *, kernel: bool = False) -> list[Verdict]:
    return [run_one(p, kernel=kernel) for p in paths]


def summary(verdicts: list[Verdict]) -> str:
    """'N passed, M failed' (+ known deviations and skips when there are any)."""
    passed = sum(1 for v in verdicts if v.verdict == "pass")
    failed = sum(1 for v in verdicts if not v.ok)
    xfail = sum(1 for v in verdicts if v.verdict == "xfail")
    skipped = sum(1 for v in verdicts if v.verdict == "skip")
    text = f"{passed} passed, {failed} failed"
    if xfail:
        text += f", {xfail} known deviations (fail as recorded)"
    if skipped:
        text += f", {skipped} skipped"
    return text
