"""docs/conformance.md stays true: every test or script it names exists, every
requirement of RFC 9293 Appendix B has a row, and its lists of deviations and
tcpstack-only scripts match the scripts' header comments."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
SCRIPTS = ROOT / "tests" / "scripts"
REF = re.compile(r"`(tests/[^`\s]+)`")
ROW = re.compile(r"^\| (MUST|SHLD|MAY|REC)-(\d+) \|", re.M)

# RFC 9293 Appendix B, Table 8: the requirement IDs and the number of rows (some IDs have several).
ALL_IDS = {f"MUST-{i}" for i in range(1, 70)} | {f"SHLD-{i}" for i in range(1, 32)} | {
    f"MAY-{i}" for i in range(1, 19)} | {"REC-1"}
TABLE_ROWS = 126


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def _headers(kind: str) -> set[str]:
    out = set()
    for p in SCRIPTS.rglob("*.pkt"):
        for line in p.read_text(encoding="utf-8").splitlines():
            if re.match(rf"\s*//\s*tcpstack-{kind}\s*:", line):
                out.add(str(p.relative_to(ROOT)))
    return out


def test_every_named_test_or_script_exists() -> None:
    missing = []
    for ref in sorted(set(REF.findall(_text()))):
        path, _, name = ref.partition("::")
        f = ROOT / path
        if not f.exists():
            missing.append(ref)
        elif name and not re.search(rf"^\s*def {re.escape(name)}\(", f.read_text(encoding="utf-8"), re.M):
            missing.append(ref)
    assert not missing, f"docs/conformance.md names tests or scripts that do not exist: {missing}"


def test_every_requirement_has_a_row() -> None:
    rows = ROW.findall(_text())
    ids = {f"{k}-{n}" for k, n in rows}
    assert ALL_IDS - ids == set(), f"requirements without a row: {sorted(ALL_IDS - ids)}"
    assert ids - ALL_IDS == set(), f"rows for IDs RFC 9293 does not have: {sorted(ids - ALL_IDS)}"
    assert len(rows) == TABLE_ROWS, f"{len(rows)} rows; Table 8 has {TABLE_ROWS}"


def test_deviation_list_matches_the_script_headers() -> None:
    listed = set(REF.findall(_section("Deviations from Linux")))
    assert listed == _headers("deviation"), (
        f"listed but no header: {sorted(listed - _headers('deviation'))}; "
        f"header but not listed: {sorted(_headers('deviation') - listed)}"
    )


def test_tcpstack_only_list_matches_the_script_headers() -> None:
    listed = set(REF.findall(_section("Scripts that run on tcpstack only")))
    assert listed == _headers("only")
