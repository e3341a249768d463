"""Log output: readable lines, or one JSON object per line for log collectors.

`--log-format json` writes `{"time", "level", "logger", "message"}` per record, plus
`activityId` when the record belongs to an operation. The code logs an operation's records
as `"[%s] ..."` with the activityId as first argument (a house convention); the JSON form
moves it out of the message into its own field.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from cua.logtext import MAX_LINE, SafeFormatter

__all__ = ["JsonFormatter", "setup_logging", "split_activity"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_ACTIVITY_PREFIX = "[%s] "


def split_activity(record: logging.LogRecord) -> tuple[str | None, str]:
    """(activityId, the message without it) of a `"[%s] ..."` record; (None, message) else."""
    message_format, args = record.msg, record.args
    if (
        isinstance(message_format, str)
        and message_format.startswith(_ACTIVITY_PREFIX)
        and isinstance(args, tuple)
        and args
    ):
        return str(args[0]), message_format[len(_ACTIVITY_PREFIX) :] % args[1:]
    return None, record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        activity_id, message = split_activity(record)
        message = message[:MAX_LINE]  # the traceback (ours) is not cut
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if activity_id is not None:
            data["activityId"] = activity_id
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str, log_format: str = "text") -> None:
    """The root handler on stderr at `level` (`DEBUG` ... `ERROR`), text or JSON.

    Called again, it changes the level and format of the handler it installed. When the
    root logger already has handlers of someone else (a test harness), it leaves them be."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "cua_handler", False)]
    if root.handlers and not ours:
        return
    # Text: one line per message, whatever untrusted text it quotes (cua.logtext).
    formatter = JsonFormatter() if log_format == "json" else SafeFormatter(TEXT_FORMAT)
    if ours:
        ours[0].setFormatter(formatter)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.cua_handler = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    logging.getLogger("cua.mqtt.paho").setLevel(
        logging.NOTSET if level == "DEBUG" else logging.WARNING
    )
