"""Parsing edge cases that `make mutation` found untested (spec §2.3, §2.4; docs/testing.md).

Each test pins one boundary a deliberate bug in `cua.containers.parse` would move.
"""

from __future__ import annotations

import pytest

from cua.api.models import ComponentWithConfig, KeyValuePair
from cua.containers.errors import SpecError
from cua.containers.parse import ParsedComponent, parse_component
from cua.containers.spec import PortMapping, Resources

pytestmark = pytest.mark.unit


def parse(*pairs: tuple[str, str], strict: bool = True) -> ParsedComponent:
    config = [KeyValuePair(key=k, value=v) for k, v in pairs]
    return parse_component(ComponentWithConfig(id="c", version="1", config=config), strict=strict)


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
    with pytest.raises(SpecError, match="reservation memory - 100.001M must be lower"):
        parse(("memory", "100M"), ("memoryReservation", "100.001M"))
