"""Render a :class:`~.document.Report` as one self-contained HTML page.

Everything is inline: the CSS in a ``<style>`` element and every figure as a ``data:image/png;base64`` URI,
so the page can be mailed or archived as a single file and opens without any network access.  Text is
escaped with :func:`html.escape`.  In headlines and paragraphs ``**word**`` becomes ``<strong>`` and a backslash
before a markup character (:func:`~.document.literal`) keeps it literal; titles, tables and captions are plain text.
"""

from __future__ import annotations

import base64
import html
import re

from .document import Figure, Report, Section, Table

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.subtitle{color:#666;margin-top:0}.headline{background:#f3f7ff;border-left:4px solid #3b6fd8;padding:.6em 1em}
.headline p{margin:.4em 0}.note{color:#777;font-style:italic}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}caption{text-align:left;font-weight:600;
padding:.3em 0}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}.tnote{font-size:.8em;color:#666}
figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:.85em;color:#555}nav ul{columns:2;font-size:.9em}
"""
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_LITERAL = re.compile(r"\\([\\`*_\[\]<>])")
_HELD = re.compile("\x00(\\d+)\x01")


def text(value: str) -> str:
    """Escape ``value`` for HTML and turn ``**x**`` into ``<strong>x</strong>``; ``\\*`` (and the other
    :func:`~.document.literal` escapes) stand for the character itself, never markup.

    Example:
        >>> text("**a<b**"), text("**a\\*\\*b**")
        ('<strong>a&lt;b</strong>', '<strong>a**b</strong>')
    """
    held = _LITERAL.sub(lambda m: f"\x00{ord(m.group(1))}\x01", value.replace("\x00", "").replace("\x01", ""))
    marked = _STRONG.sub(r"<strong>\1</strong>", html.escape(held, quote=True))
    return _HELD.sub(lambda m: html.escape(chr(int(m.group(1))), quote=True), marked)


def plain(value: str) -> str:
    """Escape ``value`` for HTML, no markup (a table cell, a title, a caption: ``**`` stays ``**``)."""
    return html.escape(value, quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:`` URI embedding PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_table(table: Table) -> str:
    head = "".join(f"<th>{plain(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{plain(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    note = f'<div class="tnote">{plain(table.note)}</div>' if table.note else ""
    caption = f"<caption>{plain(table.caption)}</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def render_figure(figure: Figure) -> str:
    alt = html.escape(figure.caption or figure.name, quote=True)
    caption = f"<figcaption>{plain(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img src="{data_uri(figure.png)}" alt="{alt}">{caption}</figure>'


def render_section(section: Section, anchor: str) -> str:
    parts = [f'<section id="{anchor}"><h2>{plain(section.title)}</h2>']
    if section.empty:
        parts.append(f'<p class="note">{plain(section.note or "No data for this section.")}</p>')
    parts += [f"<p>{text(p)}</p>" for p in section.paragraphs]
    parts += [render_table(t) for t in section.tables]
    parts += [render_figure(f) for f in section.figures]
    if section.note and not section.empty:
        parts.append(f'<p class="note">{plain(section.note)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The complete page (UTF-8 text)."""
    anchors = [f"s{i}" for i in range(len(report.sections))]
    toc = "".join(
        f'<li><a href="#{a}">{plain(s.title)}</a></li>' for a, s in zip(anchors, report.sections, strict=True)
    )
    headline = "".join(f"<p>{text(line)}</p>" for line in report.headline)
    sections = "\n".join(render_section(s, a) for s, a in zip(report.sections, anchors, strict=True))
    subtitle = f'<p class="subtitle">{plain(report.subtitle)}</p>' if report.subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{plain(report.title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{plain(report.title)}</h1>{subtitle}\n"
        f'<div class="headline">{headline}</div>\n<nav><ul>{toc}</ul></nav>\n{sections}\n</body></html>\n'
    )
