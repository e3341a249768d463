"""Settings: Kanto's config.json as is, our keys, flags on top, one-line errors."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cua.broker import MqttVersion
from cua.config import ConfigError, Overrides, load_config
from cua.containers.gosyntax import parse_go_duration
from cua.settings import Limits, Manage, Mode

pytestmark = pytest.mark.unit

EXAMPLE_CONFIG = Path(__file__).parents[2] / "packaging" / "config.json"

LEDA_CONFIG = {
    "log": {"log_file": "/var/log/container-management/container-management.log"},
    "things": {"enable": True},
    "deployment": {"enable": True, "mode": "update"},
    "update_agent": {
        "enable": True,
        "system_containers": ["sua"],
        "verbose_inventory_report": False,
    },
    "connection": {"broker_url": "tcp://localhost:1883"},
}


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def error_of(path: Path | None, overrides: Overrides | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or Overrides())
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config.domain == "containers"
    assert config.update.mode is Mode.STANDALONE
    assert config.update.manage is Manage.LABELLED
    assert config.update.system_containers == ()
    assert str(config.mqtt.broker) == "mqtt://localhost:1883"
    assert config.mqtt.version is MqttVersion.V311
    assert (config.mqtt.keep_alive, config.mqtt.connect_timeout) == (20.0, 30.0)
    assert (config.mqtt.subscribe_timeout, config.mqtt.unsubscribe_timeout) == (15.0, 5.0)
    assert config.mqtt.disconnect_timeout == 0.25
    assert config.engine_url == ""
    assert (config.update.activation_window, config.update.activation_timeout) == (3.0, 60.0)


def test_the_packaged_example_config_spells_out_the_defaults() -> None:
    example = load_config(EXAMPLE_CONFIG)
    defaults = load_config(
        None, Overrides(system_containers=("sua",), engine="unix:///var/run/docker.sock")
    )
    # The client id is a new random UUID on every load.
    assert replace(example, mqtt=replace(example.mqtt, client_id="")) == replace(
        defaults, mqtt=replace(defaults.mqtt, client_id="")
    )


def test_leda_config_unchanged(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LEDA_CONFIG))
    assert config.update.system_containers == ("sua",)
    assert config.update.verbose_inventory is False
    assert config.mqtt.broker.host == "localhost"
    assert config.mqtt.broker.port == 1883


def test_all_kanto_connection_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "update_agent": {"domain": "self-update", "verbose_inventory_report": True},
            "connection": {
                "broker_url": "mqtt://127.0.0.1:2883",
                "keep_alive": "1m",
                "disconnect_timeout": "500ms",
                "client_username": "agent",
                "client_password": "s3cret",
                "connect_timeout": "1m30s",
                "acknowledge_timeout": "2s",
                "subscribe_timeout": "3s",
                "unsubscribe_timeout": "4s",
            },
        },
    )
    config = load_config(path)
    assert config.domain == "self-update"
    assert config.update.verbose_inventory is True
    m = config.mqtt
    assert (m.broker.host, m.broker.port, m.broker.tls) == ("127.0.0.1", 2883, False)
    assert (m.keep_alive, m.disconnect_timeout, m.connect_timeout) == (60.0, 0.5, 90.0)
    assert (m.acknowledge_timeout, m.subscribe_timeout, m.unsubscribe_timeout) == (2.0, 3.0, 4.0)
    assert (m.username, m.password) == ("agent", "s3cret")
    assert "s3cret" not in repr(config)


def test_invalid_duration_falls_back_to_default_as_kanto(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, {"connection": {"keep_alive": "20 seconds", "connect_timeout": 5}})
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.mqtt.keep_alive == 20.0
    assert config.mqtt.connect_timeout == 30.0
    assert "connection.keep_alive" in caplog.text
    assert "connection.connect_timeout" in caplog.text


def test_our_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "update_agent": {
                "mode": "orchestrated",
                "manage": "all",
                "strict": True,
                "engine": "unix:///tmp/x/docker.sock",
                "state_dir": "/tmp/cua-state",
                "registry_mirrors": {"ghcr.io": "127.0.0.1:5000"},
                "registries": {"registry.example": {"username": "u", "password": "pw"}},
                "pull_always": True,
                "stop_timeout": "5s",
                "activation_window": "500ms",
                "activation_timeout": 20,
                "mqtt_version": "5",
                "max_message_size": 65536,
                "max_activity_id_length": 64,
                "max_components": 10,
            }
        },
    )
    config = load_config(path)
    assert (config.update.activation_window, config.update.activation_timeout) == (0.5, 20.0)
    assert config.update.limits == Limits(
        max_message_size=65536, max_activity_id_length=64, max_components=10
    )
    assert config.update.mode is Mode.ORCHESTRATED
    assert config.update.manage is Manage.ALL
    assert config.update.strict is True
    assert config.update.pull_always is True
    assert config.update.stop_grace_period == 5.0
    assert config.engine_url == "unix:///tmp/x/docker.sock"
    assert config.state_dir == Path("/tmp/cua-state")
    assert dict(config.registry_mirrors) == {"ghcr.io": "127.0.0.1:5000"}
    login = config.registries["registry.example"]
    assert (login.username, login.password) == ("u", "pw")
    assert "pw" not in repr(config.registries)
    assert config.mqtt.version is MqttVersion.V5


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, LEDA_CONFIG)
    config = load_config(
        path,
        Overrides(
            broker="tls://broker.local",
            engine="/run/docker.sock",
            domain="vehicle-containers",
            mode="ORCHESTRATED",
            manage="all",
            system_containers=("a", "b"),
            verbose_inventory=True,
            strict=True,
            state_dir="/tmp/s",
            log_level="debug",
        ),
    )
    assert (config.mqtt.broker.host, config.mqtt.broker.port, config.mqtt.broker.tls) == (
        "broker.local",
        8883,
        True,
    )
    assert config.engine_url == "/run/docker.sock"
    assert config.domain == "vehicle-containers"
    assert config.update.mode is Mode.ORCHESTRATED
    assert config.update.manage is Manage.ALL
    assert config.update.system_containers == ("a", "b")
    assert config.update.verbose_inventory
    assert config.update.strict
    assert config.state_dir == Path("/tmp/s")
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"update_agent": {"mode": "auto"}}, "update_agent.mode: Input should be"),
        ({"update_agent": {"manage": "some"}}, "update_agent.manage"),
        ({"update_agent": {"strict": "yes"}}, "update_agent.strict"),
        ({"update_agent": {"system_containers": "sua"}}, "update_agent.system_containers"),
        ({"update_agent": {"domain": ""}}, "update_agent.domain: the domain must not be empty"),
        ({"update_agent": {"domain": "a/b"}}, "update_agent.domain"),
        ({"update_agent": {"engine": "ftp://x"}}, "update_agent.engine: unsupported engine URL"),
        ({"update_agent": {"stop_timeout": "soon"}}, "update_agent.stop_timeout"),
        ({"update_agent": {"activation_window": "-1s"}}, "update_agent.activation_window"),
        ({"update_agent": {"activation_timeout": -5}}, "update_agent.activation_timeout"),
        ({"update_agent": {"registry_mirrors": {"ghcr.io": 5}}}, "update_agent.registry_mirrors"),
        ({"update_agent": {"registries": {"r": {"password": "x"}}}}, "update_agent.registries.r"),
        ({"connection": {"broker_url": "http://x:1"}}, "connection.broker_url: unsupported scheme"),
        ({"connection": {"broker_url": "localhost:1883"}}, "connection.broker_url: missing scheme"),
        ({"connection": {"broker_url": "tcp://:1883"}}, "connection.broker_url: missing host"),
        ({"connection": {"broker_url": "tcp://h:99999"}}, "connection.broker_url: invalid port"),
        ({"connection": {"client_password": 12345}}, "connection.client_password"),
        ({"update_agent": {"max_components": 0}}, "update_agent.max_components: Input should be"),
        ({"update_agent": {"max_message_size": "1M"}}, "update_agent.max_message_size"),
        (
            {
                "connection": {
                    "broker_url": "ssl://h",
                    "transport": {"root_ca": "/nonexistent/ca.crt"},
                }
            },
            "connection.transport.root_ca: /nonexistent/ca.crt: no such file",
        ),
        (
            {"connection": {"transport": {"client_key": "/k.pem"}}},
            "connection.transport.client_key: set without client_cert",
        ),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, content: Any, expected: str) -> None:
    message = error_of(write(tmp_path, content))
    assert expected in message


def test_password_never_in_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"connection": {"client_password": ["hunter2-secret"], "broker_url": "tcp://u:hunter2@h"}},
    )
    message = error_of(path)
    assert "hunter2" not in message
    url_message = error_of(None, Overrides(broker="tcp://user:hunter2@host:1883"))
    assert "hunter2" not in url_message
    assert url_message.startswith("--broker:")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (Overrides(mode="fast"), "--mode: 'fast' is not one of standalone, orchestrated"),
        (Overrides(manage="none"), "--manage: 'none' is not one of labelled, all"),
        (Overrides(broker="ws://h"), "--broker: unsupported scheme 'ws'"),
        (Overrides(engine="ssh://h"), "--engine: unsupported engine URL scheme"),
        (Overrides(domain=""), "--domain: the domain must not be empty"),
        (Overrides(system_containers=("",)), "--system-container: a system container name"),
        (Overrides(log_level="loud"), "--log-level: 'loud' is not one of"),
        (Overrides(mqtt_version="4"), "--mqtt-version: '4' is not one of 3.1.1, 5"),
    ],
)
def test_flag_errors_name_the_flag(overrides: Overrides, expected: str) -> None:
    assert expected in error_of(None, overrides)


def test_missing_file() -> None:
    assert error_of(Path("/nonexistent/config.json")).startswith("--config: /nonexistent")


def test_enable_false_is_ignored(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"update_agent": {"enable": False}}))
    assert config.domain == "containers"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("300us", 0.0003),
        ("2µs", 2e-6),
        ("100ns", 1e-7),
        ("-1s", -1.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "20", "s", "1x", "20 s", "1.2.3s", "30a"])
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(text)


def test_download_settings(tmp_path: Path) -> None:
    assert load_config(None).download.by_agent  # the agent fetches unless told otherwise
    assert not load_config(
        write(tmp_path, {"update_agent": {"download": "engine"}})
    ).download.by_agent
    config = load_config(
        write(
            tmp_path,
            {
                "update_agent": {
                    "download_rate_limit": "2MB",
                    "download_cache_max": 1000,
                }
            },
        )
    )
    assert config.download.by_agent
    assert config.download.rate_limit == 2 << 20
    assert config.download.cache_max == 1000


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("download", "registry", 'update_agent.download: must be "agent" or "engine"'),
        ("download_rate_limit", "fast", "update_agent.download_rate_limit: must be a size"),
        ("download_cache_max", -1, "update_agent.download_cache_max: must be a size"),
    ],
)
def test_bad_download_settings(tmp_path: Path, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, {"update_agent": {key: value}}))


def test_unknown_keys_warn_with_the_closest_known_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = {
        "update_agent": {"stop_timeot": "5s", "domain": "containers", "zzzz": 1},
        "connection": {"broker_ur": "tcp://x:1883", "transport": {"root_cert": ""}},
        "things": {"enable": True},  # another section of Kanto's file: not ours to check
    }
    with caplog.at_level(logging.WARNING):
        config = load_config(write(tmp_path, content))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    path = tmp_path / "config.json"
    assert warnings == [
        f'{path}: update_agent: unknown key "stop_timeot" ignored (did you mean "stop_timeout"?)',
        f'{path}: update_agent: unknown key "zzzz" ignored',
        f'{path}: connection: unknown key "broker_ur" ignored (did you mean "broker_url"?)',
        f'{path}: connection.transport: unknown key "root_cert" ignored (did you mean "root_ca"?)',
    ]
    assert config.update.stop_grace_period == 30.0  # ignored, as Kanto ignores it


def test_the_example_configs_have_no_unknown_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_config(EXAMPLE_CONFIG)
    assert caplog.text == ""
