"""`python -m cua.api.schema` edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutants left alive in `cua.api.schema`: `ensure_ascii` True, None or dropped
(every schema text is ASCII).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cua.api.schema import main

pytestmark = pytest.mark.unit


def test_main_reads_the_command_line_and_makes_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "docs" / "schema"
    monkeypatch.setattr(sys, "argv", ["schema", str(target)])
    assert main() == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(str(p) for p in target.iterdir())


def test_usage_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["a", "b"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "usage: python -m cua.api.schema DIR\n")
