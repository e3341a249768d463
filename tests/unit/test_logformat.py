"""`--log-format json`: one JSON object per line, with the activityId where there is one."""

from __future__ import annotations

import json
import logging

import pytest

from cua.logformat import JsonFormatter, setup_logging

pytestmark = pytest.mark.unit


def record(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("cua.update.operation", level, __file__, 1, message, args, None)


def test_one_object_per_line_with_the_activity_id_moved_out_of_the_message() -> None:
    line = JsonFormatter().format(
        record("[%s] %s of %s failed: %s", "act-1", "ACTIVATING", "web", "no\nway")
    )
    assert "\n" not in line
    data = json.loads(line)
    assert set(data) == {"time", "level", "logger", "message", "activityId"}
    assert data["activityId"] == "act-1"
    assert data["message"] == "ACTIVATING of web failed: no\nway"
    assert (data["level"], data["logger"]) == ("WARNING", "cua.update.operation")
    assert data["time"].endswith("+00:00")


def test_a_record_without_an_activity_has_no_activity_id() -> None:
    data = json.loads(JsonFormatter().format(record("connecting to MQTT broker %s", "mqtt://x")))
    assert "activityId" not in data
    assert data["message"] == "connecting to MQTT broker mqtt://x"


def test_cli_run_log_format_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        root.handlers[:] = []
        setup_logging("INFO", "json")
        logging.getLogger("cua.agent").info("[%s] feedback %s", "a-7", "COMPLETED")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("cua.agent").exception("unexpected")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["activityId"] == "a-7"
    assert first["message"] == "feedback COMPLETED"
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["message"]


def test_run_offers_log_format_and_rejects_others(capsys: pytest.CaptureFixture[str]) -> None:
    from cua.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--log-format", "xml"])
    assert info.value.code == 2
    assert "--log-format: invalid choice: 'xml'" in capsys.readouterr().err
