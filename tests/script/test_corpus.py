"""The whole corpus (tests/scripts/**/*.pkt) against tcpstack, in virtual time.

Each script must pass, except those whose header records a deviation from
Linux (``// tcpstack-deviation: ...``): they must still fail, and fail as a
test failure (not as a script error).  A deviation that stops failing is an
error here too: the engine changed, so the header must go (strict xfail).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpstack.script.corpus import run_one

CORPUS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPTS = sorted(CORPUS.rglob("*.pkt"))


def _id(p: Path) -> str:
    return str(p.relative_to(CORPUS))


def test_corpus_size() -> None:
    assert len(SCRIPTS) >= 150, f"the corpus has {len(SCRIPTS)} scripts; the target is 150"


@pytest.mark.parametrize("path", SCRIPTS, ids=_id)
def test_script_on_tcpstack(path: Path) -> None:
    v = run_one(str(path))
    if v.verdict == "xpass":
        pytest.fail(f"{_id(path)} passes now, but its header records a deviation ({v.reason}); "
                    "remove the tcpstack-deviation header", pytrace=False)
    assert v.verdict in ("pass", "xfail"), f"{v.verdict}: {v.result.message}"
