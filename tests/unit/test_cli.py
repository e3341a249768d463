"""The command line: argument handling, one-line errors, `validate` (no engine needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cua.cli import build_parser, decode_desired_state, main, overrides_from
from cua.testing.fake_engine import FakeEngine

pytestmark = pytest.mark.unit

LEDA = Path(__file__).parents[2] / "examples" / "leda-desired-state.json"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert one_line(capsys.readouterr().err).startswith("cua: error:")


def test_unknown_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--brokr", "tcp://x"])
    assert info.value.code == 2
    assert "unrecognized arguments: --brokr" in one_line(capsys.readouterr().err)


def test_bad_flag_value_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--mode", "auto"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "cua: error: --mode: 'auto' is not one of standalone, orchestrated"
    )


def test_bad_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    connection = {"broker_url": "http://x", "client_password": "pw"}
    config.write_text(json.dumps({"connection": connection}))
    assert main(["run", "--config", str(config)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "connection.broker_url: unsupported scheme 'http'" in err
    assert "pw" not in err.replace(str(config), "")


def test_flags_parse_into_overrides() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--broker",
            "mqtts://b:8883",
            "--engine",
            "unix:///s",
            "--domain",
            "d",
            "--mode",
            "orchestrated",
            "--manage",
            "all",
            "--system-container",
            "a",
            "--system-container",
            "b",
            "--verbose-inventory",
            "--strict",
            "--state-dir",
            "/x",
            "--log-level",
            "DEBUG",
        ]
    )
    o = overrides_from(args)
    assert (o.broker, o.engine, o.domain, o.mode, o.manage) == (
        "mqtts://b:8883",
        "unix:///s",
        "d",
        "orchestrated",
        "all",
    )
    assert o.system_containers == ("a", "b")
    assert o.verbose_inventory
    assert o.strict
    assert (o.state_dir, o.log_level) == ("/x", "DEBUG")


def test_tools_have_no_broker_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["state", "--broker", "tcp://x"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_envelope_and_bare_desired_state() -> None:
    activity, desired = decode_desired_state(LEDA.read_bytes())
    assert activity == "activity-id-leda-containers"
    assert len(desired.domains[0].components) == 5
    bare = json.loads(LEDA.read_text())["payload"]
    activity, desired_bare = decode_desired_state(json.dumps(bare).encode())
    assert activity == ""
    assert desired_bare == desired


def test_validate_leda_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(LEDA)]) == 0
    out = capsys.readouterr().out
    assert "valid: 5 container(s) for domain 'containers'" in out
    assert out.count("warning:") == 2  # the two Leda port strings (spec D7)


def test_validate_strict_fails_on_leda_ports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--strict", str(LEDA)]) == 1
    line = one_line(capsys.readouterr().out)
    assert line.startswith("IDENTIFICATION_FAILED: cannot convert desired state components")
    assert "databroker" in line


def test_validate_wrong_domain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--domain", "vehicle", str(LEDA)]) == 1
    assert one_line(capsys.readouterr().out) == (
        "IDENTIFICATION_FAILED: domain id mismatch - expecting vehicle, received containers"
    )


def test_validate_bad_json_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"activityId": "a",')))
    assert main(["validate", "-"]) == 1
    assert one_line(capsys.readouterr().out).startswith(
        "IDENTIFICATION_FAILED: invalid desired state: not valid JSON at line 1"
    )


def test_validate_schema_error_names_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"activityId": "x", "payload": {"domains": [{"id": 5}]}}))
    assert main(["validate", str(path)]) == 1
    out = one_line(capsys.readouterr().out)
    assert out.startswith("IDENTIFICATION_FAILED: invalid desired state: payload.domains[0].id:")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"activityId":"a","timestamp":NaN,"payload":{}}', "not valid JSON (NaN is not JSON)"),
        (b'{"activityId":"a","timestamp":1e400,"payload":{}}', "timestamp: must be an integer"),
        (b'{"domains":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"domains":[{"id":"containers","components":' + b"9" * 5000 + b"}]}", "payload.domains"),
    ],
)
def test_validate_hostile_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "ds.json"
    path.write_bytes(content)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert one_line(captured.out).startswith(
        f"IDENTIFICATION_FAILED: invalid desired state: {message}"
    )
    assert "Traceback" not in captured.out + captured.err


def test_validate_names_the_components_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"update_agent": {"max_components": 2}}))
    components = [{"id": f"c{i}", "version": "1", "config": []} for i in range(3)]
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"domains": [{"id": "containers", "components": components}]}))
    assert main(["validate", "--config", str(config), str(path)]) == 1
    assert one_line(capsys.readouterr().out) == (
        "IDENTIFICATION_FAILED: the desired state has 3 components, more than the limit of 2"
        " (update_agent.max_components)"
    )


def test_validate_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent.json"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "cua: error: /nonexistent.json: No such file or directory"
    )


def test_state_with_the_engine_down_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cua state` must not print an inventory without containers, exit 0, when it could
    not read the containers: a script would take that for "no containers"."""
    from cua.testing.fake_engine import FakeEngine

    engine = FakeEngine()
    engine.available = False
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    assert main(["state"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "cua: engine error: cannot reach the container engine" in err
    assert engine.call_count("close") == 1


def test_apply_json_prints_each_feedback_envelope(
    engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    path = tmp_path / "ds.json"
    component = {"id": "web", "version": "1", "config": [{"key": "image", "value": "img:1"}]}
    desired = {"domains": [{"id": "containers", "components": [component]}]}
    path.write_text(json.dumps({"activityId": "act-1", "timestamp": 1, "payload": desired}))
    assert main(["apply", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    envelopes = [json.loads(line) for line in out.splitlines()]
    assert {e["activityId"] for e in envelopes} == {"act-1"}
    statuses = [e["payload"]["status"] for e in envelopes]
    assert statuses[:2] == ["IDENTIFYING", "IDENTIFIED"]
    assert statuses[-1] == "COMPLETED"
    assert err == ""  # no "result:" line: stdout and stderr are for machines
    assert engine.container_names() == ["web"]
