"""The command line: argument handling, one-line errors, `validate` (no engine needed)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
from pathlib import Path

import pytest

from cua.cli import build_parser, decode_desired_state, main, overrides_from
from cua.engine.base import ContainerSummary
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


def test_apply_takes_a_state_dir_for_its_download_cache(tmp_path: Path) -> None:
    from cua.cli import _agent_downloader
    from cua.config import load_config

    args = build_parser().parse_args(["apply", "-", "--state-dir", str(tmp_path / "elsewhere")])
    config = load_config(None, overrides_from(args))
    assert _agent_downloader(config).cache.root == tmp_path / "elsewhere" / "images-containers"


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


# --- help texts, options per command -----------------------------------------------------------

COMMANDS = ("run", "plan", "apply", "state", "validate")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_description_exit_codes_and_defaults(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert len(description.split()) > 8, text  # a sentence, not just the usage line
    assert "exit codes:" in text
    assert "  0  " in text
    assert "  2    usage or configuration error" in text
    for line in text.splitlines():
        if line.strip().startswith("--") and "default" not in text:
            raise AssertionError(line)
    if command != "validate":
        assert "(default: update_agent.domain, else containers)" in " ".join(text.split())


def test_apply_help_states_the_interrupt_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["apply", "--help"])
    text = capsys.readouterr().out
    assert "130  interrupted by Ctrl-C" in text
    assert "143  interrupted by SIGTERM" in text


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("validate", "--engine"),
        ("validate", "--manage"),
        ("validate", "--system-container"),
        ("state", "--strict"),
        ("plan", "--verbose-inventory"),
        ("apply", "--mode"),
        ("plan", "--log-format"),
    ],
)
def test_options_that_do_not_apply_are_not_offered(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, flag, "x", "file.json"] if command != "state" else [command, flag, "x"])
    assert info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert flag not in capsys.readouterr().out


# --- state as a table ------------------------------------------------------------------------


def test_state_prints_a_table_and_the_inventory_with_json(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cua.containers.parse import parse_component
    from tests.builders import add_managed, component

    add_managed(engine, "web", "2.0", image="img:1")
    engine.add_container("foreign", parse_component(component("foreign", image="img:9")).spec)
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    # Reported: this domain's containers, and the system containers (ours or not).
    assert main(["state", "--system-container", "foreign"]) == 0
    rows = [row.split() for row in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["NAME", "VERSION", "IMAGE", "STATUS", "SINCE", "MANAGED"]
    assert [(r[0], r[1], r[2], r[3], r[-1]) for r in rows[1:]] == [
        ("foreign", "9", "img:9", "Running", "no"),
        ("web", "1", "img:1", "Running", "yes"),
    ]
    assert all(r[-2] == "UTC" for r in rows[1:])
    assert main(["state", "--json", "--system-container", "foreign"]) == 0
    inventory = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in inventory["softwareNodes"]] == [
        "containers-update-agent",
        "containers:foreign",
        "containers:web",
    ]


# --- apply: warnings in the display, interrupted -----------------------------------------------


def _write_desired(tmp_path: Path, *components: dict[str, object]) -> Path:
    path = tmp_path / "ds.json"
    desired = {"domains": [{"id": "containers", "components": list(components)}]}
    path.write_text(json.dumps({"activityId": "act-1", "timestamp": 1, "payload": desired}))
    return path


def _web(image: str, **config: str) -> dict[str, object]:
    pairs = [{"key": "image", "value": image}] + [{"key": k, "value": v} for k, v in config.items()]
    return {"id": "web", "version": "1", "config": pairs}


def test_apply_warnings_are_lines_of_the_progress_display(
    engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine.fail_start("img:2", "no such device")
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    assert main(["apply", str(_write_desired(tmp_path, _web("img:2")))]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert all(re.match(r"\[ *\d+\.\ds\] ", line) for line in lines), out
    warning = next(line for line in lines if "warning:" in line)
    assert warning.endswith(
        "] warning: ACTIVATING of web failed: cannot start container web: no such device"
    )
    assert err == "result: INCOMPLETE\n"  # no log line on stderr


class _SignalOnStop(FakeEngine):
    """Sends the process `signum` while the old container is being stopped (UPDATE)."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum

    async def stop_container(self, container: str, grace_period: float = 30.0) -> None:
        os.kill(os.getpid(), self.signum)
        await asyncio.sleep(0.05)  # the handler runs; the engine call still completes
        await super().stop_container(container, grace_period)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_apply_restores_what_it_changed(
    signum: signal.Signals,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.builders import add_managed

    engine = _SignalOnStop(signum)
    engine.add_registry_image("img:2")
    old_id = add_managed(engine, "web", "1", image="img:1")
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    assert main(["apply", str(_write_desired(tmp_path, _web("img:2")))]) == code
    out, err = capsys.readouterr()
    assert (
        one_line(err) == f"cua: interrupted by {signum.name}: restored web as before the operation"
    )
    last = out.splitlines()[-1]
    assert "INCOMPLETE" in last
    assert f"stopped by {signum.name}: the operation was interrupted" in last
    assert engine.container_names() == ["web"]  # no .cua-new / .cua-old left
    details = asyncio.run(engine.inspect_container("web"))
    assert details.id == old_id
    assert details.state.status.value == "Running"


def test_apply_interrupted_before_any_change_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class SignalOnList(FakeEngine):
        async def list_containers(self) -> list[ContainerSummary]:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)  # the loop runs the signal handler
            return await super().list_containers()

    engine = SignalOnList()
    engine.add_registry_image("img:2")
    monkeypatch.setattr("cua.cli._make_engine", lambda config: engine)
    assert main(["apply", str(_write_desired(tmp_path, _web("img:2")))]) == 130
    assert one_line(capsys.readouterr().err) == (
        "cua: interrupted by SIGINT: nothing had been changed"
    )
    assert engine.container_names() == []


def test_dev_stack_help_prints_help_and_starts_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "cua_dev.stack", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root / "devtools"), "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m cua_dev.stack")
    assert "private dockerd" in done.stdout
    assert "local stack up" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # no stack directory was made


# --- typos ----------------------------------------------------------------------------------


def test_validate_reports_unknown_keys_as_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    component = {
        "id": "web",
        "version": "1",
        "confg": [],
        "config": [{"key": "image", "value": "r/web:1"}, {"key": "restartPolcy", "value": "no"}],
    }
    envelope = {
        "activityId": "a",
        "timestamp": 1,
        "payload": {"domains": [{"id": "containers", "components": [component]}]},
        "paylod": {},
    }
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(envelope))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        'warning: envelope: unknown key "paylod" ignored (did you mean "payload"?)',
        'warning: payload.domains[0].components[0]: unknown key "confg" ignored '
        '(did you mean "config"?)',
        'warning: container web: unknown config key "restartPolcy" ignored '
        '(did you mean "restartPolicy"?)',
        "valid: 1 container(s) for domain 'containers'",
    ]
    assert main(["validate", "--strict", str(path)]) == 1
    out = one_line(capsys.readouterr().out)
    assert out.startswith("IDENTIFICATION_FAILED: ")
    assert '"restartPolcy" (did you mean "restartPolicy"?)' in out


def test_validate_names_the_typo_that_left_the_payload_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"activityId": "a", "paylod": {"domains": []}}))
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        'warning: envelope: unknown key "paylod" ignored (did you mean "payload"?)',
        "IDENTIFICATION_FAILED: one domain expected in desired state specification, but got 0",
    ]


def test_each_domain_downloads_into_its_own_cache_in_a_shared_state_dir(tmp_path: Path) -> None:
    from cua.cli import _agent_downloader
    from cua.config import Overrides, load_config

    caches = [
        _agent_downloader(
            load_config(None, Overrides(domain=domain, state_dir=str(tmp_path)))
        ).cache.root
        for domain in ("containers", "vehicle.apps", "other:x")
    ]
    assert caches == [
        tmp_path / "images-containers",
        tmp_path / "images-vehicle.apps",
        tmp_path / "images-other_x",  # as its journal's name (journal-other_x.jsonl)
    ]
