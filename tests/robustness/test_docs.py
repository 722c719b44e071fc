"""docs/robustness.md is generated from the battery: every kind has a test asserting it, and the page
is current (regenerate: ``.venv/bin/python tests/robustness/kinds.py --write``)."""
from __future__ import annotations

from kinds import DOC, KINDS, covered_kinds, render


def test_every_kind_is_asserted_by_a_test():
    covered = covered_kinds()
    ids = [k.id for k in KINDS]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i not in covered] == []
    assert sorted(set(covered) - set(ids)) == []  # no marker names an unknown kind


def test_docs_page_is_current():
    assert DOC.read_text() == render(), "docs/robustness.md is stale: run .venv/bin/python tests/robustness/kinds.py --write"
