"""Image reference edge cases that `make mutation` found untested (docs/testing.md)."""

from __future__ import annotations

import pytest

from cua.containers.reference import MAX_NAME_LENGTH, reference_problem

pytestmark = pytest.mark.unit

FORMAT = "it does not follow the reference format [host[:port]/]path[:tag][@digest]"


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("", "it is empty"),
        ("Web:1", "the repository name must be lowercase"),
        ("web:1:2", FORMAT),
        ("a" * MAX_NAME_LENGTH, None),
        ("a" * (MAX_NAME_LENGTH + 1), "the repository name is longer than 255 characters"),
        ("a" * 1024, "the repository name is longer than 255 characters"),
        ("a" * 1025, "it is longer than 1024 characters"),
    ],
)
def test_reference_problems_and_their_limits(reference: str, problem: str | None) -> None:
    assert reference_problem(reference) == problem
