"""Command line: `cua run | plan | apply | state | validate`.

`run` is the agent (MQTT daemon). The others are tools that need no broker: they talk to
the engine directly, with the same settings (`--config` and the same flags) as the agent.
Every usage or configuration error is one line on stderr and exit code 2.

Start-up time matters (`cua --help`, `cua validate` in scripts; the agent's first current
state): this module imports only argparse at first; each command imports what it uses
(pydantic's models, asyncio, the engine) once the arguments are parsed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cua import __version__

if TYPE_CHECKING:
    from cua.api.models import DesiredState, DesiredStateFeedback
    from cua.config import AgentConfig, Overrides
    from cua.engine.base import Engine
    from cua.settings import Limits

__all__ = ["main"]

log = logging.getLogger("cua")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is exactly one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common_flags(parser: argparse.ArgumentParser, *, agent: bool) -> None:
    parser.add_argument("--config", metavar="FILE", help="a Kanto container-management config.json")
    parser.add_argument(
        "--engine", metavar="URL", help="Engine API URL, e.g. unix:///run/docker.sock"
    )
    parser.add_argument(
        "--domain", metavar="NAME", help="the update agent's domain (default containers)"
    )
    parser.add_argument(
        "--system-container",
        metavar="NAME",
        action="append",
        default=[],
        dest="system_containers",
        help="a container never touched (repeatable; replaces the config's list)",
    )
    parser.add_argument("--manage", metavar="labelled|all", help="which containers may be changed")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="malformed port/device/mount entries fail identification",
    )
    parser.add_argument(
        "--verbose-inventory", action="store_true", help="report every container parameter"
    )
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    if agent:
        parser.add_argument(
            "--broker",
            metavar="URL",
            help="MQTT broker, e.g. tcp://localhost:1883 or mqtts://host:8883",
        )
        parser.add_argument(
            "--mode", metavar="standalone|orchestrated", help="what a desired state does"
        )
        parser.add_argument("--state-dir", metavar="DIR", help="the agent's state directory")
        parser.add_argument(
            "--mqtt-version", metavar="3.1.1|5", help="MQTT protocol version (default 3.1.1)"
        )


def _file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="desired state (envelope or bare), - for stdin"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cua", description="Container update agent (Eclipse Kanto compatible)")
    parser.add_argument("--version", action="version", version=f"cua {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run", help="run the agent (MQTT)", description="Run the update agent."
    )
    _common_flags(run, agent=True)

    plan = commands.add_parser("plan", help="show what a desired state would do")
    _file_argument(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _common_flags(plan, agent=False)

    apply = commands.add_parser("apply", help="apply a desired state now, without a broker")
    _file_argument(apply)
    apply.add_argument("--json", action="store_true", help="print each feedback message as JSON")
    _common_flags(apply, agent=False)

    state = commands.add_parser("state", help="print the current state (inventory) as JSON")
    _common_flags(state, agent=False)

    validate = commands.add_parser("validate", help="validate a desired state (no engine needed)")
    _file_argument(validate)
    _common_flags(validate, agent=False)
    return parser


def overrides_from(args: argparse.Namespace) -> Overrides:
    from cua.config import Overrides

    return Overrides(
        broker=getattr(args, "broker", None),
        engine=args.engine,
        domain=args.domain,
        mode=getattr(args, "mode", None),
        manage=args.manage,
        system_containers=tuple(args.system_containers),
        verbose_inventory=args.verbose_inventory,
        strict=args.strict,
        state_dir=getattr(args, "state_dir", None),
        log_level=args.log_level,
        mqtt_version=getattr(args, "mqtt_version", None),
    )


def _setup_logging(level: str) -> None:
    from cua.logtext import SafeFormatter

    handler = logging.StreamHandler(sys.stderr)
    # One line per message, whatever untrusted text it quotes (cua.logtext).
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    if level != "DEBUG":
        logging.getLogger("cua.mqtt.paho").setLevel(logging.WARNING)


# --- desired state files ----------------------------------------------------------------------


class InputError(Exception):
    """The FILE argument cannot be read."""


def read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None


def decode_desired_state(raw: bytes, limits: Limits | None = None) -> tuple[str, DesiredState]:
    """An envelope `{activityId, timestamp, payload}` or a bare desired state.

    Raises MessageError with the text the agent would report (with its `limits`).
    """
    from cua.api.envelope import decode, decode_object, load_json
    from cua.api.models import DesiredState
    from cua.settings import Limits

    limits = limits or Limits()
    try:
        data = load_json(raw)
    except ValueError:
        data = None
    bare = isinstance(data, dict) and not ({"activityId", "payload", "timestamp"} & data.keys())
    if bare and len(raw) <= limits.max_message_size:
        envelope = decode_object({"activityId": "", "payload": data}, DesiredState, "desired state")
        return "", envelope.payload or DesiredState()
    envelope = decode(
        raw,
        DesiredState,
        "desired state",
        max_size=limits.max_message_size,
        max_activity_id=limits.max_activity_id_length,
    )
    return envelope.activity_id, envelope.payload or DesiredState()


# --- commands ---------------------------------------------------------------------------------


def _make_engine(config: AgentConfig) -> Engine:
    from cua.agent import open_engine

    return open_engine(config)


async def _run_agent(config: AgentConfig, state_dir: Path) -> int:
    import asyncio
    import signal

    from cua.agent import Agent
    from cua.update.journal import journal_for

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = _make_engine(config)
    try:
        await Agent(config, engine, journal=journal_for(state_dir, config.domain)).run(stop)
    finally:
        await engine.close()
    return EXIT_OK


class _PrintingPublisher:
    """Feedback to stdout as it happens: readable lines, or the JSON envelopes."""

    def __init__(self, as_json: bool) -> None:
        from cua.display import FeedbackPrinter

        self._as_json = as_json
        self._printer = FeedbackPrinter()

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        from cua.api.envelope import encode

        if self._as_json:
            line = encode(activity_id, feedback).decode()
        else:
            line = self._printer.format(feedback)
        print(line, flush=True)
        if on_delivered is not None:
            on_delivered()


class _NoPublisher:
    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        if on_delivered is not None:
            on_delivered()


async def _apply(
    config: AgentConfig, activity_id: str, desired: DesiredState, as_json: bool
) -> int:
    from cua.api.models import StatusType
    from cua.update.manager import UpdateManager

    engine = _make_engine(config)
    try:
        manager = UpdateManager(engine, _PrintingPublisher(as_json), config.update)
        status = await manager.apply(activity_id, desired)
    finally:
        await engine.close()
    if not as_json:
        print(f"result: {status.value}", file=sys.stderr)
    return EXIT_OK if status is StatusType.COMPLETED else EXIT_FAILED


async def _plan(config: AgentConfig, desired: DesiredState, as_json: bool) -> int:
    import json

    from cua.containers.errors import DesiredStateError
    from cua.display import plan_as_json, plan_table
    from cua.update.manager import UpdateManager

    engine = _make_engine(config)
    try:
        manager = UpdateManager(engine, _NoPublisher(), config.update)
        try:
            plan = await manager.plan(desired)
        except DesiredStateError as exc:
            print(f"IDENTIFICATION_FAILED: {exc}", file=sys.stderr)
            return EXIT_FAILED
    finally:
        await engine.close()
    if as_json:
        print(json.dumps(plan_as_json(plan), indent=2))
    else:
        print(plan_table(plan))
    return EXIT_OK


async def _state(config: AgentConfig) -> int:
    import json

    from cua.current_state import CurrentStateReader

    engine = _make_engine(config)
    try:
        # The agent reports only its root node when the engine is down (as Kanto); this tool
        # fails instead, so that a script never reads that as "no containers".
        await engine.list_containers()
        inventory = await CurrentStateReader(engine, config.update).read()
    finally:
        await engine.close()
    print(json.dumps(inventory.to_wire(), indent=2, ensure_ascii=False))
    return EXIT_OK


def _validate(config: AgentConfig, desired: DesiredState) -> int:
    from cua.containers.errors import DesiredStateError
    from cua.containers.parse import parse_desired_state

    try:
        parsed = parse_desired_state(
            desired,
            config.domain,
            strict=config.update.strict,
            max_components=config.update.limits.max_components,
        )
    except DesiredStateError as exc:
        print(f"IDENTIFICATION_FAILED: {exc}")
        return EXIT_FAILED
    for warning in parsed.warnings:
        print(f"warning: {warning}")
    print(f"valid: {len(parsed.containers)} container(s) for domain {config.domain!r}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cua.config import ConfigError, load_config
    from cua.engine.base import EngineError

    overrides = overrides_from(args)
    try:
        config = load_config(Path(args.config) if args.config else None, overrides)
    except ConfigError as exc:
        print(f"cua: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(config.log_level if args.log_level or args.command == "run" else "WARNING")

    try:
        return _dispatch(args, config)
    except EngineError as exc:
        print(f"cua: engine error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cua: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, config: AgentConfig) -> int:
    from cua.api.envelope import MessageError, now_ms

    if args.command == "run":
        # The agent journals its operations there for crash recovery; the tools below do
        # not (they must not touch the journal of an agent that may be running).
        from cua.update.journal import UnsafeStateDirError, prepare_state_dir

        try:
            state_dir = prepare_state_dir(config.state_dir)
        except UnsafeStateDirError as exc:
            print(f"cua: error: update_agent.state_dir: {config.state_dir}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(
                f"cua: error: update_agent.state_dir: {config.state_dir}: "
                f"{exc.strerror or exc} (the directory must be creatable and writable)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return _on_event_loop(_run_agent(config, state_dir))
    if args.command == "state":
        return _on_event_loop(_state(config))

    try:
        activity_id, desired = decode_desired_state(read_input(args.file), config.update.limits)
    except InputError as exc:
        print(f"cua: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MessageError as exc:
        # Exactly what the agent would report (IDENTIFICATION_FAILED's message).
        print(
            f"IDENTIFICATION_FAILED: {exc}",
            file=sys.stdout if args.command == "validate" else sys.stderr,
        )
        return EXIT_FAILED
    if args.command == "validate":
        return _validate(config, desired)
    if args.command == "plan":
        return _on_event_loop(_plan(config, desired, args.json))
    return _on_event_loop(
        _apply(config, activity_id or f"cua-apply-{now_ms()}", desired, args.json)
    )


def _on_event_loop(command: Coroutine[Any, Any, int]) -> int:
    """Run an async command (asyncio is imported only then: `cua validate` needs none)."""
    import asyncio

    return asyncio.run(command)
