"""The SVG ladder and the plots, checked as pictures.

SVGs are rendered to PNG with rsvg-convert (librsvg, ``make deps-debian``)
and the PNGs examined with Pillow: size, that the timelines and arrows are
drawn where the SVG says, that the coloured expert arrows are coloured.
The plots are written by matplotlib and examined the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from tcpstack.sim.link import LinkParams
from tcpstack.sim.transfer import run_transfer
from tcpstack.view import svg as svgmod
from tcpstack.view.infer import load
from tcpstack.view.ladder import rows_from_events
from tcpstack.view.plot import analyse, plot_segments, segments_from_events, segments_from_rows
from tcpstack.view.svg import render_svg, svg_from_rows

from .test_expert import crafted

needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None,
                                reason="rsvg-convert not installed (make deps-debian: librsvg2-bin)")


def to_png(svg_text: str, path: Path) -> Image.Image:
    src = path.with_suffix(".svg")
    src.write_text(svg_text)
    subprocess.run(["rsvg-convert", "-o", str(path), str(src)], check=True, timeout=60)
    return Image.open(path).convert("RGB")


def dark(px: tuple[int, int, int]) -> bool:
    return sum(px) < 200


def reddish(px: tuple[int, int, int]) -> bool:
    r, g, b = px
    return r > 150 and g < 110 and b < 110


@pytest.fixture(scope="module")
def expert_conn(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = crafted().write(tmp_path_factory.mktemp("pic") / "crafted.pcap")
    _cap, (conn,) = load(path)
    return conn


def arrows(root: ET.Element) -> list[tuple[float, float, float, float, str]]:
    out = []
    for ln in root.iter("{http://www.w3.org/2000/svg}line"):
        if ln.get("class") == "arrow":
            out.append((float(ln.get("x1")), float(ln.get("y1")), float(ln.get("x2")),  # type: ignore[arg-type]
                        float(ln.get("y2")), ln.get("stroke", "")))  # type: ignore[arg-type]
    return out


@needs_rsvg
def test_svg_ladder_is_a_picture_of_the_connection(expert_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = render_svg(expert_conn, title="crafted")
    root = ET.fromstring(text)
    w, h = int(root.get("width")), int(root.get("height"))  # type: ignore[arg-type]
    # Text: one label per segment, every inferred state beside its side, the title.
    labels = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "label"]
    assert len(labels) == len(expert_conn.segments) == 26
    assert "".join(labels[0].itertext()).startswith("[S] seq=0 win=64240")
    states = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")
              if t.get("class") == "state"]
    assert states == [c.state for c in expert_conn.states]
    assert "dup ACK #2 of frame 8" in text and "zero window probe" in text
    # Arrows run from one timeline to the other, and slope down (time runs down).
    lines = arrows(root)
    assert len(lines) == 26
    assert all({x1, x2} == {svgmod._X_LEFT, svgmod._X_RIGHT} and y2 > y1 for x1, y1, x2, y2, _c in lines)
    red = [ln for ln in lines if ln[4] == "#c0392b"]
    assert len(red) == 5  # fast retransmission, RTO retransmission, lost segment, out-of-order, RST

    img = to_png(text, tmp_path / "ladder.png")
    assert img.size == (w, h)
    px = img.load()
    # The two timelines are drawn over the whole ladder.
    y0, y1 = svgmod._TOP, h - 80
    for x in (svgmod._X_LEFT, svgmod._X_RIGHT):
        column = [px[x, y] for y in range(y0, y1)]
        assert sum(map(dark, column)) > 0.9 * len(column)
    # Every arrow is really there: pixels along it are inked.
    for x1, y1_, x2, y2, colour in lines:
        samples = [(x1 + (x2 - x1) * f, y1_ + (y2 - y1_) * f) for f in (0.5, 0.6, 0.7, 0.8)]
        ink = 0
        for x, y in samples:
            around = [px[int(x) + dx, int(y) + dy] for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
            ink += any(dark(p) or reddish(p) or p[0] < 230 for p in around)
        assert ink >= 3, (x1, y1_, x2, y2, colour)
    # The lane between the timelines is far from blank, and has red in it.
    lane = img.crop((svgmod._X_LEFT + 4, y0, svgmod._X_RIGHT - 4, y1))
    colours = lane.getcolors(maxcolors=1 << 20)
    assert colours is not None
    non_white = sum(n for n, c in colours if c != (255, 255, 255))
    assert non_white > 0.02 * lane.size[0] * lane.size[1]
    assert sum(n for n, c in colours if reddish(c)) > 200


@needs_rsvg
def test_svg_fixed_slant_and_timed_slopes(expert_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fixed = arrows(ET.fromstring(render_svg(expert_conn, timing="fixed")))
    assert {round(y2 - y1) for _x1, y1, _x2, y2, _c in fixed} == {svgmod._FIXED_SLANT}
    timed_text = render_svg(expert_conn)
    assert "arrows slope by the one-way delays" in timed_text
    timed = arrows(ET.fromstring(timed_text))
    assert len({round(y2 - y1) for _x1, y1, _x2, y2, _c in timed}) > 1
    to_png(timed_text, tmp_path / "timed.png")  # renders
    with pytest.raises(ValueError):
        render_svg(expert_conn, timing="sideways")


def test_plot_series(expert_conn) -> None:  # type: ignore[no-untyped-def]
    ts = analyse(expert_conn.tuples())
    assert ts.direction == 0 and ts.scaled
    assert (ts.retrans[0][1], ts.retrans[0][2]) == (1001, 2001)  # the fast retransmission
    assert ts.acks[0][1] == 1 and ts.acks[-1][1] == 8025
    assert (2001, 4001) in {(s[1], s[2]) for s in ts.sacks}
    # Windows are scaled by the SYNs' shift 7: 512 << 7; the zero window is 0.
    assert ts.rwnd[1][1] == 512 << 7 and 0 in {w for _t, w in ts.rwnd}
    assert max(f for _t, f in ts.in_flight) == 4000
    assert ts.resets and ts.syn_fin[0][2] == "SYN"


def test_plot_png_and_svg(expert_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "plot.png"
    plot_segments(expert_conn.tuples(), png, title="crafted")
    img = Image.open(png).convert("RGB")
    assert img.size == (1100, 880)
    colours = img.getcolors(maxcolors=1 << 22)
    assert colours is not None

    def count(pred) -> int:  # type: ignore[no-untyped-def]
        return sum(n for n, c in colours if pred(c))

    assert count(lambda c: c != (255, 255, 255)) > 0.05 * img.size[0] * img.size[1]
    assert count(reddish) > 50  # retransmissions
    assert count(lambda c: c[1] > 110 and c[0] < 90 and c[2] < 120) > 50  # the green ACK line
    assert count(lambda c: c[0] > 120 and c[2] > 150 and c[1] < 110) > 20  # purple SACK blocks
    out = tmp_path / "plot.svg"
    plot_segments(expert_conn.tuples(), out)
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()
    with pytest.raises(ValueError):
        plot_segments(expert_conn.tuples(), tmp_path / "plot.nope")


@needs_rsvg
def test_demo_data_plots_and_draws(tmp_path: Path) -> None:
    """The hooks `tcpstack demo --plot/--svg` can call: engine events -> segments / rows."""
    res = run_transfer(20_000, seed=3, link=LinkParams(delay_us=5_000, loss=0.05))
    segs = segments_from_events(res.events)
    assert segs and all(side in (0, 1) for _t, side, _s in segs)
    ts = plot_segments(segs, tmp_path / "demo.png")
    assert ts.direction == 0 and max(d[2] for d in ts.data + ts.retrans) == 20_001  # bytes 1..20000
    rows = rows_from_events(res.events, lost=res.lost)
    assert len(segments_from_rows(rows)) == len(segs)
    text = svg_from_rows(rows, title="demo")
    img = to_png(text, tmp_path / "demo-ladder.png")
    assert img.size[1] > 300
    root = ET.fromstring(text)
    assert len([t for t in root.iter("{http://www.w3.org/2000/svg}text")
                if t.get("class") == "label"]) == len(segs)
