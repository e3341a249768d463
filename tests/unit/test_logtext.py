"""Log lines that untrusted input cannot forge or flood."""

from __future__ import annotations

import logging

import pytest

from cua.logtext import MAX_LINE, SafeFormatter, Throttle, escape_controls, quoted

pytestmark = pytest.mark.unit


def test_quoted_is_json_quoted_and_cut() -> None:
    assert quoted('a"b\nc') == '"a\\"b\\nc"'
    assert quoted("x" * 200, limit=5) == '"xxxxx…(195 more characters)"'


def test_escape_controls_keeps_one_line() -> None:
    assert escape_controls("a\nb\rc\td\x1b[31m\u2028e") == "a\\nb\\rc\\td\\u001b[31m\\u2028e"


def test_formatter_puts_every_message_on_one_line_and_cuts_it() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "id %s", ("a\nERROR forged",), None)
    assert formatter.format(record) == "INFO id a\\nERROR forged"
    long = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("y" * 10_000,), None)
    assert len(formatter.format(long)) < MAX_LINE + 100


def test_throttle_lets_a_burst_through_then_summarises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = Throttle(logging.getLogger("t"), burst=3, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for index in range(1000):
            throttle.warning("bad", "bad message %d", index)
        throttle.info("other", "other")
        assert [r.getMessage() for r in caplog.records] == [
            "bad message 0",
            "bad message 1",
            "bad message 2",
            "other",
        ]
        now[0] = 11.0
        throttle.warning("bad", "bad message again")
        throttle.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[4:] == ["997 more bad message(s) not logged in 11 s", "bad message again"]
