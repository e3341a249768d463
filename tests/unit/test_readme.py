"""README tells the truth: every `cua` command line in it parses, the safe ones (validate,
--version, --help) run and print what README shows, and the messages it quotes are the ones
the program prints today."""

from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import pytest
from aiomqtt.exceptions import MqttConnectError

from cua.broker import BrokerAddress, MqttOptions
from cua.cli import _interrupted_line, build_parser, main
from cua.config import config_unknown_keys
from cua.mqtt import describe_connect_error
from cua.update.operation import stopped_message

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Replacements that make a README line runnable here: the installed config is the example.
PLACES = {"/etc/cua/config.json": str(ROOT / "packaging" / "config.json")}


def code_lines() -> list[str]:
    """The lines of README's indented code blocks (4 spaces, after a blank line); a block
    ends with an empty line."""
    lines, inside = [], False
    previous = ""
    for line in README.splitlines():
        if line.startswith("    ") and (inside or not previous.strip()):
            inside = True
            lines.append(line[4:])
        elif line.strip():
            if inside:
                lines.append("")  # the end of a block
            inside = False
        previous = line
    return lines


def cua_commands() -> list[list[str]]:
    """Every `cua ...` command of README's code blocks, as argv (comments dropped)."""
    commands = []
    for line in code_lines():
        text = line.removeprefix("$ ")
        if not text.startswith("cua "):
            continue
        text = text.split("  #")[0]
        text = re.sub(r"\[(--\w+)\]", r"\1", text)  # optional flags shown as [--json]
        argv = shlex.split(text)[1:]
        if "COMMAND" in argv:
            continue
        commands.append([PLACES.get(a, a) for a in argv])
    return commands


def nospace(text: str) -> str:
    return " ".join(text.split())


def test_readme_has_cua_commands() -> None:
    names = {argv[0] for argv in cua_commands()}
    assert {"run", "validate", "plan", "apply", "state"} <= names


@pytest.mark.parametrize("argv", cua_commands(), ids=" ".join)
def test_every_readme_cua_command_parses(argv: list[str]) -> None:
    argv = [
        str(ROOT / "examples/quickstart-desired-state.json") if a == "FILE" else a for a in argv
    ]
    build_parser().parse_args(argv)  # raises SystemExit on an unknown command or option


@pytest.mark.parametrize(
    "argv", [a for a in cua_commands() if a[0] == "validate" and "FILE" not in a], ids=" ".join
)
def test_readme_validate_commands_run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("valid: ")


def test_readme_shown_validate_output_is_what_it_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = code_lines()
    start = lines.index("$ cua validate examples/leda-desired-state.json")
    shown = []
    for line in lines[start + 1 :]:
        if line.startswith("$ ") or not line.strip():
            break
        shown.append(line)
    monkeypatch.chdir(ROOT)
    assert main(["validate", "examples/leda-desired-state.json"]) == 0
    assert capsys.readouterr().out.splitlines() == shown


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("cua ")


def test_quoted_messages_are_the_programs() -> None:
    readme = nospace(README)
    options = MqttOptions(BrokerAddress("h", 1883, tls=False), username="x")
    refusal = describe_connect_error(MqttConnectError(4), options)
    assert refusal.endswith("refused the connection: bad username or password (user 'x')")
    assert "`refused the connection: bad username or password (user 'x')`" in readme
    assert f"`{stopped_message('SIGTERM')}`" in readme
    interrupted = _interrupted_line(signal.SIGINT, ["web"], [])
    assert f"`{interrupted}`" in readme
    (typo,) = config_unknown_keys({"update_agent": {"stop_timeot": "5s"}})
    assert f"`{typo}`" in readme


async def test_quoted_engine_line_is_the_programs(tmp_path: Path) -> None:
    from cua.engine.base import EngineUnavailableError
    from cua.engine.docker import DockerEngine

    engine = DockerEngine(f"unix://{tmp_path}/docker.sock", timeout=5)
    try:
        with pytest.raises(EngineUnavailableError) as info:
            await engine.list_containers()
    finally:
        await engine.close()
    shown = str(info.value).replace(f"unix://{tmp_path}/docker.sock", "unix:///var/run/docker.sock")
    assert f"`{shown}; retrying`" in nospace(README)


def test_no_reference_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text, path
        assert "our-behaviour.md" not in text, path
        assert "reference specification" not in text, path
        for target in re.findall(r"\]\(([^)#]+)", text):
            if target.startswith("http"):
                continue
            assert (path.parent / target).exists(), (path, target)


def test_the_demo_ends_with_readmes_next_steps() -> None:
    from cua_dev.demo import NEXT_STEPS

    commands = [line.strip() for line in NEXT_STEPS.splitlines() if line.startswith("  ")]
    assert len(commands) >= 5
    blocks = code_lines()
    for command in commands:
        assert command in blocks, command
