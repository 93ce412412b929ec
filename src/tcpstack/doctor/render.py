"""Human-readable doctor report: rich tables when rich is installed and
wanted, aligned plain text otherwise. Both are drawn from the same sections."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, TextIO

from .procnet import RFC9293_STATES
from .report import Report

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _who(owners: list[dict[str, Any]], limit: int = 3) -> str:
    parts = [
        f"{o['pid']}/{o['command']}" + (f"×{o['count']}" if "count" in o else "")
        for o in owners[:limit]
    ]
    if len(owners) > limit:
        parts.append(f"+{len(owners) - limit}")
    return ", ".join(parts)


def _fmt(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def sections(report: Report, top: int = 10) -> list[Table]:
    out: list[Table] = []
    rows = []
    for st in RFC9293_STATES:
        total = report.states[st]
        rows.append(
            [
                st,
                str(report.states_by_family["ipv4"][st]),
                str(report.states_by_family["ipv6"][st]),
                str(total),
                _who(report.owners[st]),
                str(report.unowned[st]) if total else "",
            ]
        )
    note = (
        "No owner: TIME-WAIT and SYN-RECEIVED entries (and orphans, and connections not yet "
        "accept()ed) have inode 0 — no process holds them."
    )
    if report.other_states:
        note += f" Unrecognised state codes: {report.other_states}."
    out.append(
        Table(
            "Sockets by state",
            ["State", "IPv4", "IPv6", "Total", "Owners (pid/command×n)", "No owner"],
            rows,
            note,
        )
    )

    if report.listeners:
        rows = [
            [lst["address"], str(lst["port"]), str(lst["accept_queue"]), _who(lst["owners"])]
            for lst in report.listeners[:top]
        ]
        out.append(
            Table(
                "Listening",
                ["Address", "Port", "Accept queue", "Owner"],
                rows,
                f"{len(report.listeners)} listeners" if len(report.listeners) > top else "",
            )
        )

    def state_summary(states: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in states.items())

    if report.ports_in:
        rows = [
            [str(r["port"]), str(r["total"]), state_summary(r["states"])]
            for r in report.ports_in[:top]
        ]
        out.append(Table("Incoming connections by local port", ["Port", "Sockets", "States"], rows))
    if report.ports_out:
        rows = [
            [str(r["port"]), str(r["total"]), state_summary(r["states"])]
            for r in report.ports_out[:top]
        ]
        out.append(
            Table("Outgoing connections by remote port", ["Port", "Sockets", "States"], rows)
        )

    if report.top_queues:
        rows = [
            [
                q["state"],
                q["local"],
                q["remote"],
                str(q["recv_q"]),
                str(q["send_q"]),
                _who(q["owners"]),
            ]
            for q in report.top_queues[:top]
        ]
        out.append(
            Table(
                "Largest queues",
                ["State", "Local", "Remote", "Recv-Q", "Send-Q", "Owner"],
                rows,
                "Recv-Q: bytes received, not yet read by the application. Send-Q: bytes sent, "
                "not yet acknowledged by the peer.",
            )
        )

    delta = report.counters_delta
    rows = []
    for name, value in report.counters.items():
        if value is None:
            continue
        d = delta.get(name) if delta else None
        if value or d:
            rows.append([name, str(value)] + ([f"{d:+d}"] if delta is not None else []))
    headers = ["Counter", "Value"] + ([f"Δ {report.interval:g}s"] if delta is not None else [])
    out.append(
        Table(
            "Counters (non-zero)",
            headers,
            rows,
            "From /proc/net/netstat and /proc/net/snmp"
            + ("; cumulative for this network namespace." if delta is None else "."),
        )
    )

    rows = [[name, _fmt(value)] for name, value in report.tunables.items() if value is not None]
    out.append(Table("Tunables in force", ["sysctl", "Value"], rows))
    return out


def _plain_table(t: Table, out: TextIO) -> None:
    out.write(f"\n{t.title}\n{'-' * len(t.title)}\n")
    if not t.rows:
        out.write("  (none)\n")
    else:
        widths = [len(h) for h in t.headers]
        for row in t.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        out.write(
            "  "
            + "  ".join(h.ljust(w) for h, w in zip(t.headers, widths, strict=True)).rstrip()
            + "\n"
        )
        for row in t.rows:
            out.write(
                "  "
                + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                + "\n"
            )
    if t.note:
        out.write(textwrap.fill(t.note, 100, initial_indent="  ", subsequent_indent="  ") + "\n")


def _header(report: Report) -> str:
    v4 = sum(report.states_by_family["ipv4"].values())
    v6 = sum(report.states_by_family["ipv6"].values())
    return (
        f"tcpstack doctor — {report.source}, kernel {report.kernel or 'unknown'}: "
        f"{report.total_sockets} TCP sockets ({v4} IPv4, {v6} IPv6)"
    )


def render_plain(report: Report, out: TextIO, top: int = 10) -> None:
    out.write(_header(report) + "\n")
    for t in sections(report, top):
        _plain_table(t, out)
    out.write("\nFindings\n--------\n")
    if not report.findings:
        out.write("  Nothing to report.\n")
    for f in report.findings:
        out.write(f"\n[{f.severity.upper()}] {f.title}\n")
        out.write(textwrap.fill(f.detail, 100, initial_indent="  ", subsequent_indent="  ") + "\n")
        out.write(
            textwrap.fill("Advice: " + f.advice, 100, initial_indent="  ", subsequent_indent="  ")
            + "\n"
        )


def render_rich(report: Report, out: TextIO, top: int = 10) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=out, highlight=False)
    console.print(Text(_header(report), style="bold"))
    for t in sections(report, top):
        table = RichTable(
            title=t.title, title_justify="left", caption=t.note or None, caption_justify="left"
        )
        for h in t.headers:
            table.add_column(h, overflow="fold")
        for row in t.rows:
            table.add_row(*row)
        if not t.rows:
            table.add_row(*(["(none)"] + [""] * (len(t.headers) - 1)))
        console.print(table)
    console.print(Text("Findings", style="bold underline"))
    if not report.findings:
        console.print("Nothing to report.")
    for f in report.findings:
        style = SEVERITY_STYLE[f.severity]
        body = Text(f.detail + "\n\n")
        body.append("Advice: ", style="bold")
        body.append(f.advice)
        console.print(
            Panel(
                body,
                title=Text(f"{f.severity.upper()}: {f.title}", style=style),
                title_align="left",
                border_style=style,
            )
        )


def render(report: Report, out: TextIO, top: int = 10, plain: bool = False) -> None:
    if not plain:
        try:
            import rich  # noqa: F401
        except ImportError:
            plain = True
    if plain:
        render_plain(report, out, top)
    else:
        render_rich(report, out, top)
