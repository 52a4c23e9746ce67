"""Leak guard: unlabelled (pseudo-labelled) scans must never share a subject, case id or file with held-out scans."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..data.layouts import Case
from ..errors import DataError


def check_no_leak(unlabelled: Sequence[Case], held_out: Iterable[Case], *, what: str = "test/validation") -> None:
    """Raise if an unlabelled case shares a subject, case id or image file (path or bytes) with a held-out case.

    Args:
        unlabelled: cases that will be pseudo-labelled and trained on.
        held_out: the test (and validation) cases of the split, with their subject metadata.
        what: name of the held-out set for the message.

    Raises:
        DataError: naming every offending unlabelled case and why.
    """
    held = list(held_out)
    subjects = {c.subject: c.case_id for c in held}
    ids = {c.case_id for c in held}
    files = {_resolved(p): c.case_id for c in held for p in c.images}
    digests = {_digest(p): c.case_id for c in held for p in c.images if Path(p).is_file()}
    problems = []
    for case in unlabelled:
        if case.subject in subjects:
            problems.append(f"{case.case_id} (subject {case.subject} of {what} case {subjects[case.subject]})")
        elif case.case_id in ids:
            problems.append(f"{case.case_id} (same case id as a {what} case)")
        else:
            shared = [files[_resolved(p)] for p in case.images if _resolved(p) in files]
            copies = [digests[d] for p in case.images if Path(p).is_file() and (d := _digest(p)) in digests]
            if shared:
                problems.append(f"{case.case_id} (same image file as {what} case {shared[0]})")
            elif copies:
                problems.append(f"{case.case_id} (byte-identical copy of {what} case {copies[0]})")
    if problems:
        raise DataError(
            f"{len(problems)} unlabelled case(s) overlap the {what} set, so pseudo-labelling would leak held-out "
            f"scans into training: {', '.join(problems[:10])}; remove them from the unlabelled folder"
        )


def held_out_cases(cases: Iterable[Case], ids: Iterable[str]) -> list[Case]:
    """The cases whose ids are in ``ids`` (e.g. a split's ``test + val``)."""
    wanted = set(ids)
    return [c for c in cases if c.case_id in wanted]


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes (catches copies of a held-out scan under another name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolved(path: Path) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)
