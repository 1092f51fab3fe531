"""Charts as inline SVG strings: horizontal bars and histograms, no script and no fetch at view time.

The report page embeds them as they are, so it draws the same offline, in any browser, and in a
screenshot. Colours and fonts come from the page's CSS (classes `bar`, `bar-label`, `axis`).
"""

from html import escape

ROW_HEIGHT = 22
LABEL_WIDTH = 230
BAR_AREA = 260
VALUE_WIDTH = 110


def bar_length(value: float, max_value: float, length: float) -> float:
    """Pixels for `value` on an axis where `max_value` takes `length`; 0 when nothing is to scale.

    >>> bar_length(5, 10, 200), bar_length(0, 0, 200), bar_length(12, 10, 200)
    (100.0, 0.0, 200.0)
    """
    if max_value <= 0:
        return 0.0
    return round(length * min(max(value, 0) / max_value, 1.0), 1)


def bar_chart(rows: list[tuple[str, float, str]], *, max_value: float, title: str, css_class: str = "") -> str:
    """Horizontal bars: one (label, value, value text) per row, scaled so `max_value` fills the width."""
    height = ROW_HEIGHT * len(rows) + 28
    width = LABEL_WIDTH + BAR_AREA + VALUE_WIDTH
    parts = [f'<svg class="chart {css_class}" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">', f'<text class="chart-title" x="0" y="14">{escape(title)}</text>']
    for index, (label, value, text) in enumerate(rows):
        y = 24 + index * ROW_HEIGHT
        length = bar_length(value, max_value, BAR_AREA)
        parts.append(f'<text class="bar-label" x="{LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end">{escape(_clip(label, 34))}'
                     f'<title>{escape(label)}</title></text>')
        parts.append(f'<rect class="bar-track" x="{LABEL_WIDTH}" y="{y + 3}" width="{BAR_AREA}" height="{ROW_HEIGHT - 6}"/>')
        parts.append(f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 3}" width="{length}" height="{ROW_HEIGHT - 6}"/>')
        parts.append(f'<text class="bar-value" x="{LABEL_WIDTH + BAR_AREA + 6}" y="{y + 14}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(counts: list[int], edges: list[float], *, title: str, subtitle: str = "", width: int = 340,
                    height: int = 170) -> str:
    """Vertical bars, one per bin [edges[i], edges[i+1]), with the count above each and the edges below."""
    top = max(counts, default=0)
    plot_top, plot_bottom = 40, height - 22
    bin_width = width / max(len(counts), 1)
    parts = [f'<svg class="chart histogram" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">', f'<text class="chart-title" x="0" y="12">{escape(title)}</text>',
             f'<text class="axis-label" x="0" y="28">{escape(subtitle)}</text>',
             f'<line class="axis" x1="0" y1="{plot_bottom}" x2="{width}" y2="{plot_bottom}"/>']
    for index, count in enumerate(counts):
        bar_height = bar_length(count, top, plot_bottom - plot_top - 12)
        x = index * bin_width
        parts.append(f'<rect class="bar" x="{x + 2:.1f}" y="{plot_bottom - bar_height:.1f}" width="{bin_width - 4:.1f}" '
                     f'height="{bar_height}"><title>{edges[index]:.1f} to {edges[index + 1]:.1f}: {count}</title></rect>')
        if count:
            parts.append(f'<text class="bar-value" x="{x + bin_width / 2:.1f}" y="{plot_bottom - bar_height - 3:.1f}" '
                         f'text-anchor="middle">{count}</text>')
        if index % 2 == 0:
            parts.append(f'<text class="axis-label" x="{x:.1f}" y="{height - 6}">{edges[index]:.1f}</text>')
    parts.append(f'<text class="axis-label" x="{width}" y="{height - 6}" text-anchor="end">{edges[-1]:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, length: int) -> str:
    """
    >>> _clip("synthesize_qa.too_few_abilities", 12)
    'synthesize_…'
    """
    return text if len(text) <= length else text[: length - 1] + "…"
