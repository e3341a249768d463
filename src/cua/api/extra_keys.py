"""Unknown keys in an incoming desired state: warnings, never errors (Kanto ignores them).

A desired state with `paylod` or `confg` decodes into something valid but not what was
meant; `cua validate` and the agent's IDENTIFIED message name every such key with the
closest known one (`cua.typos`), and strict mode fails identification on them (D7, D8).
The known keys are the wire models' own (their JSON names), so the two never disagree.
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import msgspec

from cua.api.models import DesiredState, WireModel
from cua.typos import unknown_keys

__all__ = ["ENVELOPE_KEYS", "desired_state_unknown_keys"]

ENVELOPE_KEYS = ("activityId", "timestamp", "payload")


def _item_model(annotation: Any) -> type[WireModel] | None:
    """The wire model a list field holds (every model nested in a desired state is in a
    list: domains, baselines, components, config entries)."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, WireModel):
            return item
    return None


@functools.cache
def _model_keys(model: type[WireModel]) -> dict[str, type[WireModel] | None]:
    """A model's JSON keys, each with the model its list holds (None: not a list of models).
    Cached: msgspec resolves a model's annotations anew at each `fields()` call."""
    return {info.encode_name: _item_model(info.type) for info in msgspec.structs.fields(model)}


def _walk(data: Any, model: type[WireModel], where: str, out: list[str]) -> None:
    if not isinstance(data, dict):
        return
    keys = _model_keys(model)
    out.extend(unknown_keys(data, keys, where))
    for key, inner in keys.items():
        value = data.get(key)
        if inner is not None and isinstance(value, list):
            for index, item in enumerate(value):
                _walk(item, inner, f"{where}.{key}[{index}]", out)


def desired_state_unknown_keys(envelope: Any) -> list[str]:
    """Warnings for the unknown keys of a desired state envelope (parsed JSON)."""
    out: list[str] = []
    if not isinstance(envelope, dict):
        return out
    out.extend(unknown_keys(envelope, ENVELOPE_KEYS, "envelope"))
    _walk(envelope.get("payload"), DesiredState, "payload", out)
    return out
