"""The admin console's HTML: Jinja2 templates (content/console/*.html, autoescaped) with the
money and time filters the domain formats with, and small server-drawn SVG charts (no script,
no CDN: the console works on an intranet)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from content.pages import ICON_LINK
from domain.formats import CHINA, yuan

TEMPLATES = Path(__file__).parent / "console"


def when(value: datetime | None) -> str:
    return value.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if value else ""


@functools.cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["yuan"] = yuan
    env.filters["when"] = when
    env.globals["icon_link"] = Markup(ICON_LINK)
    return env


def render(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values)


# The wide charts are drawn 640 units wide; their text is sized by CSS (base.html: `.chart.wide
# .axis`), larger in units on a phone so that it reads at >= 12 px there. Room is kept for that size.
WIDE_FONT = 22  # the largest font-size, in units, base.html gives a wide chart's text


def svg_lines(days: Sequence[date], series: Sequence[tuple[str, str, Sequence[int]]], *, title: str,
              width: int = 640, height: int = 240) -> Markup:
    """A line chart of fen per day as inline SVG: (label, colour, values) per series, a legend,
    grid lines at 0, half and the highest value labelled in ¥; it scales to its box (viewBox)."""
    left, right, top, bottom = 8, 8, WIDE_FONT + 14, WIDE_FONT + 10
    top_value = max([1, *(v for _, _, values in series for v in values)])
    n = max(len(days) - 1, 1)

    def x(i: int) -> float:
        return left + (width - left - right) * i / n

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / top_value)

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{Markup.escape(title)}" class="chart wide">']
    half = [(top_value / 2, yuan(top_value // 2))] if top_value > 1 else []  # nothing sold: no half line
    for v, words in [(top_value, f"最高 {yuan(top_value)}"), *half, (0, "¥0")]:
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="#e3e3e3"/>')
        if v:  # the label sits on its line; ¥0 is the baseline, named by the dates below it
            parts.append(f'<text x="{left}" y="{y(v) - 4:.1f}" class="axis">{Markup.escape(words)}</text>')
    for k, (label, colour, values) in enumerate(reversed(series)):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        at = width - right - (k + 1) * (WIDE_FONT * 4 + 16)  # the legend from the right: a box, a short name
        parts.append(f'<rect x="{at}" y="{top - WIDE_FONT - 4}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{at + 16}" y="{top - 16}" class="axis">{Markup.escape(label)}</text>')
    if days:
        parts.append(f'<text x="{left}" y="{height - 6}" class="axis">{days[0]:%m-%d}</text>')
        parts.append(f'<text x="{width - right}" y="{height - 6}" class="axis" text-anchor="end">{days[-1]:%m-%d}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def svg_bars(labels: Sequence[str], values: Sequence[int], title: str, *, width: int = 640, height: int = 220,
             colour: str = "#1f6feb") -> Markup:
    """A bar chart of counts as inline SVG: one bar per label, its value above it, the label
    below; it scales to its box (viewBox)."""
    left, right, top, bottom = 8, 8, WIDE_FONT + 8, WIDE_FONT + 12
    top_value = max([1, *values])
    slot = (width - left - right) / max(len(values), 1)
    bar = min(slot * 0.6, 80)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{Markup.escape(title)}" class="chart wide">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (height - top - bottom) * value / top_value
        cx = left + slot * (i + 0.5)
        parts.append(f'<rect x="{cx - bar / 2:.1f}" y="{height - bottom - h:.1f}" width="{bar:.1f}" height="{h:.1f}"'
                     f' fill="{colour}"/>')
        parts.append(f'<text x="{cx:.1f}" y="{height - bottom - h - 4:.1f}" class="axis" text-anchor="middle">'
                     f'{value}</text>')
        short = label if len(label) * WIDE_FONT <= slot else label[:max(int(slot // WIDE_FONT) - 1, 1)] + "…"
        parts.append(f'<text x="{cx:.1f}" y="{height - 8}" class="axis" text-anchor="middle">'
                     f'<title>{Markup.escape(label)}</title>{Markup.escape(short)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def svg_ranking(labels: Sequence[str], values: Sequence[int], title: str, shown: Callable[[int], str], *,
                width: int = 360, row: int = 24) -> Markup:
    """A ranking as horizontal bars in inline SVG: a row per place (its label on the left, the bar,
    its value as `shown` writes it after the bar), an axis from 0 to the highest value below. Drawn
    360 units wide, so its text reads at its own size on a 390 px phone; at most 560 px wide."""
    left, value_room, top = 96, 84, 6
    span = width - left - value_room
    top_value = max([1, *values])
    bottom = top + row * len(values)
    height = bottom + 22
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{Markup.escape(title)}" class="chart"'
             f' style="max-width:560px">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y, w = top + row * i, span * max(value, 0) / top_value
        name = label if len(label) <= 7 else label[:6] + "…"
        parts.append(f'<text x="{left - 6}" y="{y + row * 0.65:.1f}" class="axis" text-anchor="end">'
                     f'{Markup.escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" fill="#1f6feb"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + row * 0.65:.1f}" class="axis">'
                     f'{Markup.escape(shown(value))}</text>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>'
                 f'<line x1="{left}" y1="{bottom}" x2="{left + span}" y2="{bottom}" stroke="#999"/>'
                 f'<text x="{left}" y="{bottom + 15}" class="axis" text-anchor="middle">0</text>'
                 f'<text x="{left + span}" y="{bottom + 15}" class="axis" text-anchor="middle">'
                 f'{Markup.escape(shown(top_value))}</text></svg>')
    return Markup("".join(parts))
