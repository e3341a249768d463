"""Command line: `cua run | plan | apply | state | validate`.

`run` is the agent (MQTT daemon). The others are tools that need no broker: they talk to
the engine directly, with the same settings (`--config` and the same flags) as the agent.
Every usage or configuration error is one line on stderr and exit code 2.

Start-up time matters (`cua --help`, `cua validate` in scripts; the agent's first current
state): this module imports only argparse at first; each command imports what it uses
(the wire models, asyncio, the engine) once the arguments are parsed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cua import __version__

if TYPE_CHECKING:
    import signal

    from cua.agent import Agent
    from cua.api.models import DesiredState, DesiredStateFeedback
    from cua.config import AgentConfig, Overrides
    from cua.download.fetch import AgentDownloader
    from cua.engine.base import Engine
    from cua.settings import Limits
    from cua.update.journal import Journal

__all__ = ["main"]

log = logging.getLogger("cua")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is exactly one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_EXIT_CODES = """exit codes:
  0    {ok}
  1    {failed}
  2    usage or configuration error (one line on stderr){more}"""
_EXIT_INTERRUPTED = """
  130  interrupted by Ctrl-C (SIGINT), after restoring what the operation changed
  143  interrupted by SIGTERM, after restoring what the operation changed"""


# Every option, by name; each command offers only those that apply to it.
_OPTIONS: dict[str, dict[str, Any]] = {
    "--config": {
        "metavar": "FILE",
        "help": "a Kanto container-management config.json (default: none, built-in defaults)",
    },
    "--engine": {
        "metavar": "URL",
        "help": "Engine API URL (default: update_agent.engine, else $DOCKER_HOST, "
        "else unix:///var/run/docker.sock)",
    },
    "--domain": {
        "metavar": "NAME",
        "help": "the update agent's domain (default: update_agent.domain, else containers)",
    },
    "--system-container": {
        "metavar": "NAME",
        "action": "append",
        "default": [],
        "dest": "system_containers",
        "help": "a container never touched (repeatable; replaces update_agent.system_containers)",
    },
    "--manage": {
        "metavar": "labelled|all",
        "help": "which containers may be changed (default: update_agent.manage, else labelled)",
    },
    "--strict": {
        "action": "store_true",
        "help": "malformed port/device/mount entries and unknown keys fail identification "
        "(default: update_agent.strict, else off: they are ignored with a warning)",
    },
    "--verbose-inventory": {
        "action": "store_true",
        "help": "report every container parameter "
        "(default: update_agent.verbose_inventory_report, else off)",
    },
    "--log-level": {
        "metavar": "LEVEL",
        "help": "DEBUG, INFO, WARNING or ERROR (default: INFO for run; "
        "the tools show only their own output unless this is given)",
    },
    "--broker": {
        "metavar": "URL",
        "help": "MQTT broker, e.g. tcp://localhost:1883 or mqtts://host:8883 "
        "(default: connection.broker_url, else tcp://localhost:1883)",
    },
    "--mode": {
        "metavar": "standalone|orchestrated",
        "help": "what a desired state does (default: update_agent.mode, else standalone)",
    },
    "--state-dir": {
        "metavar": "DIR",
        "help": "the state directory: the operation journal of `cua run`, the download cache "
        "(default: update_agent.state_dir, else /var/lib/cua)",
    },
    "--mqtt-version": {
        "metavar": "3.1.1|5",
        "help": "MQTT protocol version (default: update_agent.mqtt_version, else 3.1.1)",
    },
    "--log-format": {
        "metavar": "text|json",
        "choices": ("text", "json"),
        "default": "text",
        "help": "text lines, or one JSON object per line for log collectors (default: text)",
    },
}
_ENGINE_TOOL_OPTIONS = (
    "--config",
    "--engine",
    "--domain",
    "--system-container",
    "--manage",
    "--strict",
    "--log-level",
)


def _add_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    for name in names:
        parser.add_argument(name, **_OPTIONS[name])


def _file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="desired state (envelope or bare), - for stdin"
    )


def _command(
    commands: Any,
    name: str,
    summary: str,
    description: str,
    *,
    ok: str,
    failed: str,
    more: str = "",
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_EXIT_CODES.format(ok=ok, failed=failed, more=more),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cua",
        description="Container update agent, wire-compatible with Eclipse Kanto's. "
        "`cua run` is the agent; the other commands are tools that need no broker.",
        epilog="`cua COMMAND --help` describes each command, its defaults and exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"cua {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = _command(
        commands,
        "run",
        "run the agent (MQTT)",
        "Run the update agent: receive desired states and commands over MQTT, reconcile the "
        "engine's containers, publish feedback and the current state. Stops cleanly on "
        "SIGTERM or Ctrl-C (the operation in progress ends INCOMPLETE; crash recovery "
        "restores the device at the next start).",
        ok="stopped by SIGTERM or Ctrl-C",
        failed="unexpected error",
    )
    _add_options(run, _OPTIONS)

    plan = _command(
        commands,
        "plan",
        "show what a desired state would do",
        "Show what applying FILE would do to this engine's containers, without changing "
        "anything: one row per action; for RECREATE and UPDATE each differing field, "
        "old → new (env values hidden).",
        ok="the plan was printed",
        failed="the desired state is invalid (IDENTIFICATION_FAILED: ...) or the engine failed",
    )
    _file_argument(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _add_options(plan, _ENGINE_TOOL_OPTIONS)

    apply = _command(
        commands,
        "apply",
        "apply a desired state now, without a broker",
        "Apply FILE to this engine's containers now (the standalone flow: download, update, "
        "activate, cleanup; rollback on a failure), showing the progress. Ctrl-C or SIGTERM "
        "rolls back what the operation changed, then exits 130 or 143.",
        ok="COMPLETED",
        failed="the operation did not complete (its end status is printed)",
        more=_EXIT_INTERRUPTED,
    )
    _file_argument(apply)
    apply.add_argument("--json", action="store_true", help="print each feedback message as JSON")
    _add_options(apply, (*_ENGINE_TOOL_OPTIONS, "--state-dir"))  # its download cache

    state = _command(
        commands,
        "state",
        "print the current state (a table; --json: the inventory)",
        "Print the engine's containers as a table (name, version, image, status, since, "
        "managed by this agent or not), or with --json the Kanto current state (inventory) "
        "the agent would publish.",
        ok="the current state was printed",
        failed="the engine cannot be reached",
    )
    state.add_argument(
        "--json", action="store_true", help="the Kanto inventory, as the agent publishes it"
    )
    _add_options(
        state,
        (
            "--config",
            "--engine",
            "--domain",
            "--system-container",
            "--manage",
            "--verbose-inventory",
            "--log-level",
        ),
    )

    validate = _command(
        commands,
        "validate",
        "validate a desired state (no engine needed)",
        "Check FILE as the agent's identification would, without an engine: schema, "
        "domain, every component's config. Unknown keys and ignored entries are warnings.",
        ok="valid (warnings may be printed)",
        failed="invalid: one line, IDENTIFICATION_FAILED: ... as the agent would report it",
    )
    _file_argument(validate)
    _add_options(validate, ("--config", "--domain", "--strict"))
    return parser


def overrides_from(args: argparse.Namespace) -> Overrides:
    from cua.config import Overrides

    return Overrides(
        broker=getattr(args, "broker", None),
        engine=getattr(args, "engine", None),
        domain=getattr(args, "domain", None),
        mode=getattr(args, "mode", None),
        manage=getattr(args, "manage", None),
        system_containers=tuple(getattr(args, "system_containers", ())),
        verbose_inventory=getattr(args, "verbose_inventory", False),
        strict=getattr(args, "strict", False),
        state_dir=getattr(args, "state_dir", None),
        log_level=getattr(args, "log_level", None),
        mqtt_version=getattr(args, "mqtt_version", None),
    )


def _setup_logging(level: str, log_format: str = "text") -> None:
    from cua.logformat import setup_logging

    setup_logging(level, log_format)


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


def unknown_key_warnings(raw: bytes) -> list[str]:
    """Warnings for the keys of a desired state file that the decoding ignores."""
    from cua.api.envelope import load_json
    from cua.api.extra_keys import desired_state_unknown_keys

    try:
        data = load_json(raw)
    except ValueError:
        return []
    if isinstance(data, dict) and not ({"activityId", "payload", "timestamp"} & data.keys()):
        data = {"payload": data}
    return desired_state_unknown_keys(data)


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
    """The real engine for this configuration (Docker Engine API)."""
    from cua.engine.docker import DockerEngine

    return DockerEngine(
        config.engine_url or None,
        mirrors=config.registry_mirrors,
        credentials=config.registries,
        downloader=_agent_downloader(config) if config.download.by_agent else None,
    )


def _agent_downloader(config: AgentConfig) -> AgentDownloader:
    """The agent's own image downloads: its cache is `<state_dir>/images-<domain>` (agents
    of several domains may share a state directory), its proxy the environment's
    (`HTTPS_PROXY`...: ConfigError naming a malformed one), or, when the environment sets
    none, the engine's."""
    import os

    from cua.config import ConfigError
    from cua.download.fetch import AgentDownloader
    from cua.download.proxy import DIRECT, Proxies
    from cua.download.registry import Login, RegistryClient
    from cua.settings import domain_file_part

    try:
        proxies = Proxies.from_environment(os.environ)
    except ValueError as error:
        raise ConfigError(f'update_agent.download "agent": {error}') from None
    if proxies != DIRECT:
        log.info("registry connections: %s (the agent's environment)", proxies.describe())
    logins = {host: Login(c.username, c.password) for host, c in config.registries.items()}
    return AgentDownloader(
        config.state_dir / f"images-{domain_file_part(config.domain)}",
        RegistryClient(logins, proxies=proxies if proxies != DIRECT else None),
        rate=config.download.rate_limit,
        cache_cap=config.download.cache_max,
    )


def _import_agent() -> tuple[type[Agent], Callable[[Path | None, str], Journal]]:
    from cua.agent import Agent
    from cua.update.journal import journal_for

    return Agent, journal_for


async def _run_agent(config: AgentConfig, state_dir: Path) -> int:
    import asyncio
    import signal

    from cua.current_state import CurrentStateReader, EarlyRead

    stop = asyncio.Event()
    engine = _make_engine(config)
    try:
        async with asyncio.TaskGroup() as group:
            # Start-up (README Performance): the engine is read for the first current state
            # while the MQTT side and the agent are imported (about a quarter of the start
            # on a small device): in a thread, so that the event loop makes the read's
            # engine calls meanwhile, and dockerd answers them.
            early_read = EarlyRead(CurrentStateReader(engine, config.update), group)
            agent_type, journal_for = await asyncio.to_thread(_import_agent)
            agent = agent_type(
                config,
                engine,
                journal=journal_for(state_dir, config.domain),
                early_read=early_read,
            )

            def on_signal(signum: signal.Signals) -> None:
                agent.stop_reason = agent.stop_reason or signum.name
                stop.set()

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, on_signal, signum)
            await agent.run(stop)
    finally:
        await engine.close()
    return EXIT_OK


class _PrintingPublisher:
    """Feedback to stdout as it happens: readable lines, or the JSON envelopes."""

    def __init__(self, as_json: bool) -> None:
        from cua.display import FeedbackPrinter

        self._as_json = as_json
        self.printer = FeedbackPrinter()

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        if self._as_json:
            from cua.api.envelope import encode

            line = encode(activity_id, feedback).decode()
        else:
            line = self.printer.format(feedback)
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


def _exit_by_signal() -> dict[signal.Signals, int]:
    import signal

    return {signal.SIGINT: 130, signal.SIGTERM: 143}


async def _apply(
    config: AgentConfig,
    activity_id: str,
    desired: DesiredState,
    unknown_keys: Sequence[str],
    as_json: bool,
    *,
    show_warnings: bool,
) -> int:
    """One operation to its end. Ctrl-C / SIGTERM: the operation stops at the next point
    between engine calls, what it changed is rolled back (as the standalone ROLLBACK does),
    and one line says what was restored."""
    import asyncio

    from cua.api.models import StatusType
    from cua.display import ProgressLogHandler
    from cua.update.manager import UpdateManager

    exit_by_signal = _exit_by_signal()

    publisher = _PrintingPublisher(as_json)
    handler = None
    if show_warnings and not as_json:
        # Warnings are lines of the progress display, not log lines interleaved with it.
        handler = ProgressLogHandler(publisher.printer, lambda: sys.stdout)
        logging.getLogger("cua").addHandler(handler)
        logging.getLogger("cua").propagate = False
    engine = _make_engine(config)
    manager = UpdateManager(engine, publisher, config.update)
    received: list[signal.Signals] = []

    def interrupt(signum: signal.Signals) -> None:
        if not received:
            received.append(signum)
            manager.request_stop(signum.name)

    loop = asyncio.get_running_loop()
    for signum in exit_by_signal:
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        status = await manager.apply(activity_id, desired, unknown_keys)
        if received:
            restored, failed = await manager.restore_interrupted()
    finally:
        for signum in exit_by_signal:
            loop.remove_signal_handler(signum)
        await engine.close()
        if handler is not None:
            logging.getLogger("cua").removeHandler(handler)
            logging.getLogger("cua").propagate = True
    if received:
        print(_interrupted_line(received[0], restored, failed), file=sys.stderr)
        return exit_by_signal[received[0]]
    if not as_json:
        print(f"result: {status.value}", file=sys.stderr)
    return EXIT_OK if status is StatusType.COMPLETED else EXIT_FAILED


def _interrupted_line(signum: signal.Signals, restored: list[str], failed: list[str]) -> str:
    head = f"cua: interrupted by {signum.name}"
    if failed:
        return (
            f"{head}: restored {', '.join(restored) or 'nothing'}; "
            f"could not restore {', '.join(failed)} (see the messages above)"
        )
    if restored:
        return f"{head}: restored {', '.join(restored)} as before the operation"
    return f"{head}: nothing had been changed"


async def _plan(
    config: AgentConfig, desired: DesiredState, unknown_keys: Sequence[str], as_json: bool
) -> int:
    import json

    from cua.containers.errors import DesiredStateError
    from cua.display import plan_as_json, plan_table
    from cua.update.manager import UpdateManager

    engine = _make_engine(config)
    try:
        manager = UpdateManager(engine, _NoPublisher(), config.update)
        try:
            plan = await manager.plan(desired, unknown_keys)
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


async def _state(config: AgentConfig, as_json: bool) -> int:
    import json

    from cua.current_state import CurrentStateReader
    from cua.display import state_table

    engine = _make_engine(config)
    try:
        # The agent reports only its root node when the engine is down (as Kanto); this tool
        # fails instead, so that a script never reads that as "no containers".
        await engine.list_containers()
        inventory = await CurrentStateReader(engine, config.update).read()
    finally:
        await engine.close()
    if as_json:
        print(json.dumps(inventory.to_wire(), indent=2, ensure_ascii=False))
    else:
        print(state_table(inventory))
    return EXIT_OK


def _validate(config: AgentConfig, desired: DesiredState, unknown_keys: Sequence[str]) -> int:
    from cua.containers.errors import DesiredStateError
    from cua.containers.parse import parse_desired_state

    try:
        parsed = parse_desired_state(
            desired,
            config.domain,
            strict=config.update.strict,
            max_components=config.update.limits.max_components,
            unknown_keys=unknown_keys,
        )
    except DesiredStateError as exc:
        if not config.update.strict:  # strict: the error names them
            for warning in unknown_keys:
                print(f"warning: {warning}")
        print(f"IDENTIFICATION_FAILED: {exc}")
        return EXIT_FAILED
    for warning in parsed.warnings:
        print(f"warning: {warning}")
    print(f"valid: {len(parsed.containers)} container(s) for domain {config.domain!r}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # `--help`, usage errors: nothing more imported
    from cua.config import ConfigError, load_config

    overrides = overrides_from(args)
    # Before the config file is read: its warnings (unknown keys) are log records too.
    _setup_logging(
        "INFO" if args.command == "run" else "WARNING", getattr(args, "log_format", "text")
    )
    try:
        config = load_config(Path(args.config) if args.config else None, overrides)
    except ConfigError as exc:
        print(f"cua: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    explicit = bool(getattr(args, "log_level", None))
    _setup_logging(
        config.log_level if explicit or args.command == "run" else "WARNING",
        getattr(args, "log_format", "text"),
    )
    args.show_warnings = not explicit

    try:
        return _dispatch(args, config)
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
        return _on_event_loop(_state(config, args.json))

    try:
        raw = read_input(args.file)
        activity_id, desired = decode_desired_state(raw, config.update.limits)
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
        return _validate(config, desired, unknown_key_warnings(raw))
    if args.command == "plan":
        return _on_event_loop(_plan(config, desired, unknown_key_warnings(raw), args.json))
    return _on_event_loop(
        _apply(
            config,
            activity_id or f"cua-apply-{now_ms()}",
            desired,
            unknown_key_warnings(raw),
            args.json,
            show_warnings=args.show_warnings,
        )
    )


def _on_event_loop(command: Coroutine[Any, Any, int]) -> int:
    """Run an async command (asyncio and the engine are imported only then: `cua validate`
    needs neither). An engine error is one line on stderr and exit code 1; a configuration
    error found as the command sets itself up (the environment's proxy), exit code 2."""
    import asyncio

    from cua.config import ConfigError
    from cua.engine.base import EngineError

    try:
        return asyncio.run(command)
    except EngineError as exc:
        print(f"cua: engine error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:  # found as the command set itself up (the environment's)
        print(f"cua: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
