"""Parsing edge cases that `make mutation` found untested (spec §2.3, §2.4; docs/testing.md).

Each test pins one boundary a deliberate bug in `cua.containers.parse` would move.
Equivalent mutants left alive:
- `config.get(key, "")` with None or no default where `or <default>` follows, and
  `host_ip = None`, `host_port_end = None` before `or`: the same value either way.
- `device.container_path == "XXXX"`: `parse_device` fills an empty container path with the
  host path, so only an empty host path can leave it empty, and that is caught first.
- The image error without its value, or `reserved >= 0`: the value is `""` there, which
  is the default; a reservation of 0 bytes is never over a limit.
- The defaults of `SpecError` (`cua.containers.errors`): `fail` always passes all three.
- `quote` with `ensure_ascii=None`: false, as False.
"""

from __future__ import annotations

import pytest

from cua.containers.errors import DesiredStateError, SpecError
from cua.containers.parse import ParsedComponent, parse_component, parse_desired_state
from cua.containers.spec import NetworkMode, PortMapping
from tests.builders import component, desired, memory_limits

pytestmark = pytest.mark.unit


def parse(*pairs: tuple[str, str], strict: bool = True) -> ParsedComponent:
    return parse_component(component(pairs=pairs), strict=strict)


def test_port_65535_is_a_port() -> None:
    assert parse(("port", "65535-65535:65535")).spec.ports == (PortMapping(65535, 65535, 65535),)


def test_port_0_is_a_port() -> None:
    assert parse(("port", "0:0")).spec.ports == (PortMapping(0, 0, 0),)


def test_port_65536_is_not() -> None:
    with pytest.raises(SpecError, match="the host port 65536 is not between 0 and 65535"):
        parse(("port", "65536:80"))


def test_reservation_equal_to_the_limit_is_accepted() -> None:
    # CM rejects only a reservation *greater* than the limit.
    spec = parse(("memory", "100M"), ("memoryReservation", "100M")).spec
    assert spec.resources == memory_limits(memory="100M", memory_reservation="100M")


def test_reservation_one_byte_over_the_limit_is_rejected() -> None:
    # 3072.001k is 3145729.024 bytes: one byte over 3M once truncated, as CM does.
    with pytest.raises(SpecError) as caught:
        parse(("memory", "3M"), ("memoryReservation", "3072.001k"))
    assert str(caught.value) == "reservation memory - 3072.001k must be lower than memory - 3M"


@pytest.mark.parametrize("number", ["2147483648", "-2147483649"])
def test_a_port_outside_int32_is_not_an_integer(number: str) -> None:
    # Go's ParseInt(text, 10, 32) fails on it; inside int32 it would be "not between".
    with pytest.raises(SpecError) as caught:
        parse(("port", f"80:{number}"))
    assert str(caught.value) == (
        f'invalid port "80:{number}": the container port "{number}" is not an integer'
    )


def test_an_env_error_hides_everything_after_the_first_equals_sign() -> None:
    with pytest.raises(SpecError) as caught:
        parse(("env", "1PASSWORD=pass=word"))
    assert str(caught.value) == (
        "invalid environmental variable declaration provided : 1PASSWORD=<hidden>"
    )


@pytest.mark.parametrize(
    ("pairs", "key", "value"),
    [
        ((("image", ""),), "image", ""),
        ((("logDriver", "syslog"),), "logDriver", "syslog"),
        ((("logMaxFiles", "-1"),), "logMaxFiles", ""),
        ((("logMaxSize", "1x"),), "logMaxSize", "1x"),
        ((("logMode", "fast"),), "logMode", "fast"),
        ((("logMode", "non-blocking"), ("logMaxBufferSize", "1x")), "logMaxBufferSize", "1x"),
        ((("memory", "1x"),), "memory", "1x"),
        ((("memory", "2M"),), "memory", "2M"),
        ((("memoryReservation", "1x"),), "memoryReservation", "1x"),
        ((("memory", "4M"), ("memoryReservation", "5M")), "memoryReservation", "5M"),
        ((("memorySwap", "1x"),), "memorySwap", "1x"),
        ((("memorySwap", "5M"),), "memorySwap", "5M"),
        ((("memory", "6M"), ("memorySwap", "5M")), "memorySwap", "5M"),
        ((("restartPolicy", "sometimes"),), "restartPolicy", "sometimes"),
        ((("restartPolicy", "on-failure"), ("restartMaxRetries", "-1")), "restartMaxRetries", ""),
        ((("restartPolicy", "on-failure"), ("restartTimeout", "-1")), "restartTimeout", ""),
        ((("network", "host"), ("port", "80:80")), "", ""),
    ],
)
def test_an_error_names_its_key_and_value(
    pairs: tuple[tuple[str, str], ...], key: str, value: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse(*pairs)
    assert (caught.value.component, caught.value.key, caught.value.value) == ("c", key, value)


@pytest.mark.parametrize("key", ["memory", "memoryReservation", "logMaxSize"])
def test_minus_one_is_unlimited_only_for_swap(key: str) -> None:
    with pytest.raises(SpecError, match=r"^invalid format of .* - -1$"):
        parse((key, "-1"))
    assert parse(("memory", "4M"), ("memorySwap", "-1")).spec.resources == memory_limits(
        "4M", "", "-1"
    )


def test_boundaries_that_are_accepted() -> None:
    assert parse(("logMaxFiles", "1")).spec.log.max_files == 1
    both = parse(("memory", "100M"), ("memorySwap", "100M")).spec.resources
    assert both == memory_limits("100M", "", "100M")
    assert parse(("network", "host")).spec.network is NetworkMode.HOST


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ((("memory", "0.001k"),), "minimum memory allowed is 3M"),  # 1 byte
        ((("memorySwap", "0.001k"),), "swap memory - 0.001k, memory must be set as well"),
        (
            (("memory", "0k"), ("memoryReservation", "0.001k")),
            "reservation memory - 0.001k must be lower than memory - 0k",
        ),
    ],
)
def test_one_byte_counts(pairs: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(*pairs)
    assert str(caught.value) == message


def test_warnings_quote_text_as_written() -> None:
    assert parse(("größe", "1"), strict=False).warnings == (
        'container c: unknown config key "größe" ignored',
    )


def test_strict_parse_of_one_component_fails_on_an_unknown_key_naming_it() -> None:
    with pytest.raises(SpecError) as raised:
        parse(("image", "b:1"), ("restartPolcy", "no"))
    error = raised.value
    assert str(error) == 'unknown config key "restartPolcy" (did you mean "restartPolicy"?)'
    assert (error.component, error.key, error.value) == ("c", "restartPolcy", "")


def test_an_invalid_image_is_shown_cut_at_200_characters_and_kept_whole_as_the_value() -> None:
    image = "A" * 201
    with pytest.raises(SpecError) as raised:
        parse(("image", image))
    assert str(raised.value) == (
        f'invalid image reference "{"A" * 200}…": the repository name must be lowercase'
    )
    assert (raised.value.key, raised.value.value) == ("image", image)
    with pytest.raises(SpecError, match=f'"{"A" * 200}": the repository'):
        parse(("image", "A" * 200))


def test_strict_mode_names_every_unknown_key() -> None:
    state = desired(component("web", image="img:1"))
    with pytest.raises(DesiredStateError) as raised:
        parse_desired_state(state, "containers", strict=True, unknown_keys=["one", "two"])
    assert str(raised.value) == "strict mode: one; two"
