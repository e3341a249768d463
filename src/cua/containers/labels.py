"""The labels on the containers this agent creates (our-behaviour "Containers that the agent
owns", D12).

They record that the agent manages the container, the domain of the agent that created it,
its component id and version, the image exactly as the desired state gave it, and the
normalized spec it was created from.

Ownership (`owner`): a container belongs to the domain its labels name. Labels that Docker
copied from the image's own `LABEL`s do not count: when every `io.cua.*` label of a
container has the same value in its image's labels, the container is owned by no agent
(an agent always sets labels the image cannot predict, e.g. the spec with the container's
name and the operation's activityId). A container labelled by a version before the domain
label existed (`io.cua.managed` without `io.cua.domain`) belongs to the default domain
`containers` (`LEGACY_DOMAIN`); the first one seen is logged once. The spec
is compared later field by field with the next desired spec, instead of values the engine
filled in (so no spurious UPDATE, D12), and it carries what the engine cannot hold (the
restart timeout, the log path, the log mode, sizes as written).

The spec is one compact JSON label with a schema version. Decoding never raises: a label
that is corrupt or from an unknown schema makes the container unrecognised (None) and is
logged.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cua.containers.parse import ParsedComponent
from cua.containers.spec import (
    ContainerSpec,
    DeviceMapping,
    LogConfig,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    ProcessConfig,
    Propagation,
    Resources,
    RestartPolicy,
    RestartPolicyType,
    recorded_size,
    size_text,
)

log = logging.getLogger(__name__)

LABEL_PREFIX = "io.cua."
LABEL_MANAGED = LABEL_PREFIX + "managed"
LABEL_SCHEMA = LABEL_PREFIX + "schema"
LABEL_COMPONENT_ID = LABEL_PREFIX + "component.id"
LABEL_COMPONENT_VERSION = LABEL_PREFIX + "component.version"
LABEL_IMAGE = LABEL_PREFIX + "image"
LABEL_SPEC = LABEL_PREFIX + "spec"
LABEL_DOMAIN = LABEL_PREFIX + "domain"

# The domain of containers labelled before `io.cua.domain` existed: the default domain, the
# only one those versions were run with in practice (README, "Which containers it owns").
LEGACY_DOMAIN = "containers"

MANAGED_VALUE = "true"
SCHEMA_VERSION = "1"


@dataclass(frozen=True, slots=True)
class LabelledSpec:
    """What the labels of one of our containers say."""

    component_id: str
    version: str
    image_as_given: str
    spec: ContainerSpec


def is_managed(labels: Mapping[str, str]) -> bool:
    """True for containers this agent created (whatever their other labels say)."""
    return labels.get(LABEL_MANAGED) == MANAGED_VALUE


@functools.cache
def _log_legacy_rule() -> None:
    """Once per process, however many such containers there are."""
    log.warning(
        "containers labelled %s without %s (made by an earlier version) belong to domain %r",
        LABEL_MANAGED,
        LABEL_DOMAIN,
        LEGACY_DOMAIN,
    )


def label_domain(labels: Mapping[str, str]) -> str | None:
    """The domain whose agent created the container, as its labels say (image labels not
    told apart: see `owner`); None for a container no agent labelled."""
    if not is_managed(labels):
        return None
    domain = labels.get(LABEL_DOMAIN)
    if domain is None:
        _log_legacy_rule()
        return LEGACY_DOMAIN
    return domain


def inherited_from_image(labels: Mapping[str, str], image_labels: Mapping[str, str]) -> bool:
    """True when the container's `io.cua.*` labels are all its image's own `LABEL`s (Docker
    copies those onto every container made from the image): no agent set them."""
    ours = [(key, value) for key, value in labels.items() if key.startswith(LABEL_PREFIX)]
    return bool(ours) and all(image_labels.get(key) == value for key, value in ours)


def owner(labels: Mapping[str, str], image_labels: Mapping[str, str]) -> str | None:
    """The domain that owns the container; None: no agent owns it (unlabelled, or its
    ownership labels come from its image)."""
    if inherited_from_image(labels, image_labels):
        return None
    return label_domain(labels)


def encode_labels(parsed: ParsedComponent, domain: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: MANAGED_VALUE,
        LABEL_DOMAIN: domain,
        LABEL_SCHEMA: SCHEMA_VERSION,
        LABEL_COMPONENT_ID: parsed.id,
        LABEL_COMPONENT_VERSION: parsed.version,
        LABEL_IMAGE: parsed.image_as_given,
        LABEL_SPEC: spec_to_json(parsed.spec),
    }


def decode_labels(labels: Mapping[str, str]) -> LabelledSpec | None:
    """The recorded spec of one of our containers; None if not ours or unreadable."""
    if not is_managed(labels):
        return None
    schema = labels.get(LABEL_SCHEMA)
    if schema != SCHEMA_VERSION:
        log.warning("container labels: unknown schema version %r; treated as unlabelled", schema)
        return None
    try:
        component_id = labels[LABEL_COMPONENT_ID]
        return LabelledSpec(
            component_id=component_id,
            version=labels[LABEL_COMPONENT_VERSION],
            image_as_given=labels[LABEL_IMAGE],
            spec=spec_from_json(labels[LABEL_SPEC]),
        )
    except (KeyError, ValueError) as exc:
        # Never show the label text: the spec holds env values.
        log.warning("container labels: corrupt (%s); treated as unlabelled", type(exc).__name__)
        return None


# --- the spec as JSON -------------------------------------------------------------------------


def _spec_to_data(spec: ContainerSpec) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "hostName": spec.host_name,
        "domainName": spec.domain_name,
        "config": None
        if spec.config is None
        else {"env": list(spec.config.env), "cmd": list(spec.config.cmd)},
        "devices": [[d.host_path, d.container_path, d.permissions] for d in spec.devices],
        "ports": [
            [p.host_ip, p.host_port, p.host_port_end, p.container_port, p.protocol]
            for p in spec.ports
        ],
        "mounts": [[m.source, m.destination, m.propagation.value] for m in spec.mounts],
        "extraHosts": list(spec.extra_hosts),
        "network": spec.network.value,
        "privileged": spec.privileged,
        "terminal": spec.terminal,
        "interactive": spec.interactive,
        "restart": [spec.restart.type.value, spec.restart.max_retries, spec.restart.timeout],
        "log": [
            spec.log.driver.value,
            spec.log.max_files,
            size_text(spec.log.max_size),
            spec.log.root_dir,
            spec.log.mode.value,
            size_text(spec.log.max_buffer_size),
        ],
        "resources": None
        if spec.resources is None
        else [
            size_text(spec.resources.memory),
            size_text(spec.resources.memory_reservation),
            size_text(spec.resources.memory_swap),
        ],
    }
    return data


def spec_to_json(spec: ContainerSpec) -> str:
    """Compact, deterministic, lossless JSON of a spec (the inverse of `spec_from_json`)."""
    return json.dumps(_spec_to_data(spec), ensure_ascii=False, separators=(",", ":"))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise TypeError("expected a list")
    return value


def spec_from_json(text: str) -> ContainerSpec:
    """Parse `spec_to_json` output. Raises ValueError on anything else."""
    try:
        return _spec_from_data(json.loads(text))
    except (KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f"not a container spec: {type(exc).__name__}") from None


def _spec_from_data(data: Any) -> ContainerSpec:
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    config = data["config"]
    resources = data["resources"]
    restart = _list(data["restart"], 3)
    log_data = _list(data["log"], 6)
    return ContainerSpec(
        name=_str(data["name"]),
        image=_str(data["image"]),
        host_name=_str(data["hostName"]),
        domain_name=_str(data["domainName"]),
        config=None
        if config is None
        else ProcessConfig(
            env=tuple(_str(e) for e in _list(config["env"])),
            cmd=tuple(_str(c) for c in _list(config["cmd"])),
        ),
        devices=tuple(
            DeviceMapping(_str(h), _str(c), _str(p))
            for h, c, p in (_list(d, 3) for d in _list(data["devices"]))
        ),
        ports=tuple(
            PortMapping(
                host_ip=_str(ip),
                host_port=_int(hp),
                host_port_end=_int(end),
                container_port=_int(cp),
                protocol=_str(proto),
            )
            for ip, hp, end, cp, proto in (_list(p, 5) for p in _list(data["ports"]))
        ),
        mounts=tuple(
            MountPoint(_str(s), _str(d), Propagation(_str(p)))
            for s, d, p in (_list(m, 3) for m in _list(data["mounts"]))
        ),
        extra_hosts=tuple(_str(h) for h in _list(data["extraHosts"])),
        network=NetworkMode(_str(data["network"])),
        privileged=_bool(data["privileged"]),
        terminal=_bool(data["terminal"]),
        interactive=_bool(data["interactive"]),
        restart=RestartPolicy(
            type=RestartPolicyType(_str(restart[0])),
            max_retries=_int(restart[1]),
            timeout=_int(restart[2]),
        ),
        log=LogConfig(
            driver=LogDriver(_str(log_data[0])),
            max_files=_int(log_data[1]),
            max_size=recorded_size(_str(log_data[2])),
            root_dir=_str(log_data[3]),
            mode=LogMode(_str(log_data[4])),
            max_buffer_size=recorded_size(_str(log_data[5])),
        ),
        resources=None
        if resources is None
        else Resources(*(recorded_size(_str(v)) for v in _list(resources, 3))),
    )
