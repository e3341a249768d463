"""Journal edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutants left alive in `cua.update.journal`:
- `Entry.from_json`: the text of its "not a version 1 record" ValueError (`read` logs only
  the line number); `None` or no default for `remove` and `interrupted` (`bool(None)` is
  False, as the default).
- `prepare_state_dir`: the probe file's prefix (it is removed at once).
- `Journal.close` rewriting a journal whose records it did not change (`<=` for `<`): the
  same content.
- The prefix of `replace`'s temporary file (it is renamed or removed at once).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest

from cua.containers.spec import Resources, RestartPolicy, RestartPolicyType, recorded_size
from cua.update.journal import (
    Entry,
    Journal,
    Step,
    UnsafeStateDirError,
    journal_path,
    prepare_state_dir,
)

pytestmark = pytest.mark.unit

STOPPED = b'{"v":1,"activity":"A","step":"stopped","id":"c1","name":"web"}\n'


def test_every_kind_of_record_reads_back_as_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    restart = RestartPolicy(RestartPolicyType.ON_FAILURE, max_retries=3, timeout=12)
    resources = Resources(recorded_size("200M"), recorded_size("100M"), recorded_size("-1"))
    journal.started("A")
    journal.stopped("A", "c1", "web")
    journal.updated("A", "c2", "svc", restart, resources)
    journal.updated("A", "c3", "db", RestartPolicy(RestartPolicyType.NO), None)
    journal.created("A", "c4", "web.cua-new")
    journal.committed("A", [("c1", "web", True), ("c4", "web", False)])
    journal.finished("A", "INCOMPLETE", "stopped", interrupted=True)
    journal.ended("A")
    journal.finished("B", "COMPLETED")
    assert journal.read() == [
        Entry("A", Step.STARTED, "", ""),
        Entry("A", Step.STOPPED, "c1", "web"),
        Entry("A", Step.UPDATED, "c2", "svc", restart, resources),
        Entry("A", Step.UPDATED, "c3", "db", RestartPolicy(RestartPolicyType.NO), None),
        Entry("A", Step.CREATED, "c4", "web.cua-new"),
        Entry("A", Step.COMMITTED, "c1", "web", remove=True),
        Entry("A", Step.COMMITTED, "c4", "web", remove=False),
        Entry("A", Step.FINISHED, "", "", status="INCOMPLETE", message="stopped", interrupted=True),
        Entry("A", Step.ENDED, "", ""),
        Entry("B", Step.FINISHED, "", "", status="COMPLETED"),
    ]


def test_a_record_is_one_compact_json_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).stopped("A", "c1", "web")
    assert path.read_bytes() == STOPPED


def test_records_of_another_version_or_not_objects_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'{"v":2,"activity":"A","step":"stopped","id":"c0","name":"web"}\n'
        b'["v",1]\n'
        b"\xff\xfe not UTF-8\n" + STOPPED
    )
    assert Journal(path).read() == [Entry("A", Step.STOPPED, "c1", "web")]
    assert caplog.messages == [
        f"journal {path}: line 1 unreadable, ignored",
        f"journal {path}: line 2 unreadable, ignored",
        f"journal {path}: line 3 unreadable, ignored",
    ]


def test_the_journal_file_name_keeps_only_safe_characters_of_the_domain(tmp_path: Path) -> None:
    assert journal_path(tmp_path, "containers") == tmp_path / "journal-containers.jsonl"
    assert journal_path(tmp_path, "My.dom_1-x") == tmp_path / "journal-My.dom_1-x.jsonl"
    assert journal_path(tmp_path, "a/b c:ü") == tmp_path / "journal-a_b_c__.jsonl"


def test_a_state_dir_others_can_write_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o775)
    with pytest.raises(UnsafeStateDirError) as raised:
        prepare_state_dir(state)
    assert str(raised.value) == (
        "writable by group or others (mode 0775); the journal there tells crash recovery "
        f"what to start and remove: chmod go-w {state}"
    )


def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        os.chown(state, 65534, 65534)
        owner = 65534
    else:
        state, owner = Path("/"), 0  # root's, not writable by others
    assert stat.S_IMODE(state.stat().st_mode) & 0o022 == 0
    with pytest.raises(UnsafeStateDirError) as raised:
        prepare_state_dir(state)
    assert str(raised.value) == (
        f"owned by uid {owner}, not by the agent's user (uid {os.geteuid()})"
    )


def test_a_state_dir_where_no_file_can_be_created_is_refused() -> None:
    """The agent's own /proc directory: its own, private, but no file can be made there
    (not even by root)."""
    with pytest.raises(FileNotFoundError):
        prepare_state_dir(Path(f"/proc/{os.getpid()}"))


def test_closing_a_journal_of_unreadable_lines_only_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"v":1,"activity":"A","step":"upd')  # a torn write, nothing else
    Journal(path).close("A")
    assert not path.exists()


def test_closing_keeps_the_records_of_another_activity_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.stopped("B", "c1", "web")
    journal.finished("A", "COMPLETED")
    journal.close("A")
    assert path.read_bytes() == STOPPED.replace(b'"A"', b'"B"')


def test_blank_lines_are_skipped_not_the_end(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(STOPPED + b"\n  \n" + STOPPED.replace(b"c1", b"c2"))
    assert [e.id for e in Journal(path).read()] == ["c1", "c2"]


def test_a_journal_that_cannot_be_read_is_logged_with_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    path.mkdir()
    assert Journal(path).read() == []
    assert caplog.messages == [f"cannot read the journal {path}: Is a directory"]


def test_replacing_a_journal_that_is_gone_by_nothing_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Journal(tmp_path / "journal.jsonl").replace([])
    assert caplog.records == []


def test_a_journal_that_cannot_be_rewritten_is_logged_and_leaves_no_temporary_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    path.mkdir()  # a directory cannot be replaced by a file
    with caplog.at_level(logging.ERROR):
        Journal(path).replace([Entry("A", Step.STOPPED, "c1", "web")])
    assert caplog.messages == [f"cannot rewrite the journal {path}: Is a directory"]
    assert list(tmp_path.iterdir()) == [path]


def test_the_new_content_is_written_next_to_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renamed into place, so made on the journal's own file system (not the temp dir)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    path = tmp_path / "journal.jsonl"
    Journal(path).replace([Entry("A", Step.STOPPED, "c1", "web")])
    assert path.read_bytes() == STOPPED
