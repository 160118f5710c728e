"""Which failures are expected (explained by pipekit's message) and which are bugs (keep their traceback)."""

from __future__ import annotations

import sqlite3

from pipekit_core.errors import EmptySourceError, LockHeldError, PhaseError, is_expected


def test_pipekit_failures_are_expected_and_bugs_are_not() -> None:
    assert is_expected(LockHeldError("module 'm' is already running"))
    assert is_expected(EmptySourceError("module 'm': the source query returned no rows"))
    db = sqlite3.IntegrityError("UNIQUE constraint failed: t.id")
    assert is_expected(PhaseError("m", "merge", db))  # a database refusing a row: explained by its message
    assert not is_expected(PhaseError("m", "stage", KeyError("id")))  # a bug inside a phase
    wrapped = PhaseError("m", "merge", EmptySourceError("x"))
    wrapped.__cause__ = AttributeError("'NoneType' object has no attribute 'x'")
    assert not is_expected(wrapped)
    assert not is_expected(ValueError("not pipekit's"))
