"""The leak guard: unlabelled scans never share a subject, case id or file with held-out scans."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.data.layouts import Case
from medtransfer.errors import DataError
from medtransfer.semi import check_no_leak, held_out_cases

TEST = [Case("t1", [Path("/d/t1.nii.gz")], Path("/d/l/t1.nii.gz"), {"subject": "subjA"})]


def test_disjoint_subjects_pass():
    unlabelled = [Case("u1", [Path("/u/u1.nii.gz")], None, {"subject": "subjB"}), Case("u2", [Path("/u/u2.nii.gz")])]
    check_no_leak(unlabelled, TEST)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (Case("u1", [Path("/u/u1.nii.gz")], None, {"subject": "subjA"}), "subject subjA"),  # second scan, same subject
        (Case("t1", [Path("/u/other.nii.gz")], None, {"subject": "subjZ"}), "same case id"),
        (Case("u3", [Path("/d/t1.nii.gz")], None, {"subject": "subjY"}), "same image file"),
    ],
)
def test_overlap_raises_naming_the_case(case, reason):
    with pytest.raises(DataError, match=reason) as err:
        check_no_leak([Case("ok", [Path("/u/ok.nii.gz")]), case], TEST)
    assert case.case_id in str(err.value)
    assert "ok (" not in str(err.value)


def test_held_out_cases_selects_by_id():
    cases = [Case(c, [Path(f"/d/{c}.nii.gz")]) for c in ("a", "b", "c")]
    assert [c.case_id for c in held_out_cases(cases, ["c", "a"])] == ["a", "c"]
