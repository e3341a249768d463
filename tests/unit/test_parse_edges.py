"""Parsing edge cases that `make mutation` found untested (spec §2.3, §2.4; docs/testing.md).

Each test pins one boundary a deliberate bug in `cua.containers.parse` would move.
"""

from __future__ import annotations

import pytest

from cua.containers.errors import SpecError
from cua.containers.parse import ParsedComponent, parse_component
from cua.containers.spec import PortMapping, Resources
from tests.builders import component

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
    assert spec.resources == Resources(memory="100M", memory_reservation="100M")


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
