"""The report as data: sections of paragraphs, tables and figures, rendered by :mod:`.html` and :mod:`.markdown`.

Text is plain; ``**word**`` marks emphasis (kept as is in Markdown, ``<strong>`` in HTML).  Figures carry
their PNG bytes: the HTML page embeds them, the Markdown version links files written next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells.

    Example:
        >>> Table("Dice", ("strategy", "mean"), (("full", "0.81"),)).header
        ('strategy', 'mean')
    """

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG image: ``name`` is its file stem (unique within a report), ``png`` the encoded bytes."""

    name: str
    png: bytes = field(repr=False)
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled part of the report.  ``note`` says why a section has no content (its data is absent)."""

    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    note: str = ""

    @property
    def empty(self) -> bool:
        return not (self.paragraphs or self.tables or self.figures)


@dataclass(frozen=True)
class Report:
    """The whole report: a title, the headline sentences, then the sections in order."""

    title: str
    headline: tuple[str, ...]
    sections: tuple[Section, ...]
    subtitle: str = ""

    @property
    def figures(self) -> list[Figure]:
        return [figure for section in self.sections for figure in section.figures]


_MARKUP = "\\`*[]<"


def literal(value: object) -> str:
    r"""``value`` as literal text inside report text that uses ``**`` for emphasis (a headline, a paragraph):
    each Markdown markup character (``\ ` * [ ] <``, and ``_`` unless it stands between two letters or digits,
    where GitHub Markdown never reads it as emphasis: ``first_k:1`` stays as it is) gets a backslash, which
    Markdown shows as the character itself and :func:`~.html.text` turns back into it, so a strategy named
    ``a**b**c`` is never bold.  ``>`` is markup only at the start of a line, where the report never puts a user
    string, so ``a->b`` stays as it is (``<`` is escaped: no HTML tag can open).

    Example:
        >>> print(literal("a**b_<c>"), literal("first_k:1"), literal("_x_"))
        a\*\*b\_\<c> first_k:1 \_x\_
    """
    text = str(value)
    out = []
    for i, c in enumerate(text):
        inner = c == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        out.append("\\" + c if c in _MARKUP or (c == "_" and not inner) else c)
    return "".join(out)
