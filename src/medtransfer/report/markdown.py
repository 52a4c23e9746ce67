"""Render a :class:`~.document.Report` as Markdown (GitHub flavour) whose figures are PNG files beside it.

Headlines and paragraphs are report text (``**`` is emphasis; user strings in them come escaped by
:func:`~.document.literal`); titles, table cells, notes and captions are plain text, escaped here.
"""

from __future__ import annotations

from .document import Report, Section, Table, literal


def _cell(value: str) -> str:
    return literal(value).replace("|", "\\|").replace("\n", " ")


def render_table(table: Table) -> str:
    lines = [f"*{_cell(table.caption)}*", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"<sub>{_cell(table.note)}</sub>"]
    return "\n".join(lines)


def render_section(section: Section, figure_dir: str) -> str:
    parts = [f"## {literal(section.title)}"]
    if section.empty:
        parts.append(f"_{literal(section.note or 'No data for this section.')}_")
    parts += list(section.paragraphs)
    parts += [render_table(t) for t in section.tables]
    parts += [f"![{literal(f.caption or f.name)}]({figure_dir}/{f.name}.png)" for f in section.figures]
    if section.note and not section.empty:
        parts.append(f"_{literal(section.note)}_")
    return "\n\n".join(parts)


def render_markdown(report: Report, figure_dir: str = "figures") -> str:
    """The Markdown text; figure ``f`` is linked as ``<figure_dir>/<f.name>.png``."""
    parts = [f"# {literal(report.title)}"]
    if report.subtitle:
        parts.append(f"_{literal(report.subtitle)}_")
    parts += [f"> {line}" for line in report.headline]
    parts += [render_section(s, figure_dir) for s in report.sections]
    return "\n\n".join(parts) + "\n"
