"""The current state (inventory) of the containers (spec §5.2-§5.4; Kanto's `from_containers.go`).

Pure: the caller lists and inspects the containers and passes them in. For a container
this agent created, the caller passes the label-decoded spec (in `ContainerDetails.spec`)
and the image as the desired state gave it, so the report shows what was asked for, not
what the engine rewrote (e.g. `docker.io/library/` prefixes or engine-filled defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cua import AGENT_NAME
from cua.api.models import Association, Inventory, KeyValuePair, SoftwareNode, SoftwareType
from cua.containers.gosyntax import duration_string
from cua.containers.spec import (
    ContainerSpec,
    DeviceMapping,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    RestartPolicyType,
    size_text,
)
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus

NOT_AVAILABLE = "n/a"
UNMANAGED_PARAMETER = KeyValuePair(key="managed", value="false")


@dataclass(frozen=True, slots=True)
class InventoryContainer:
    """One container to report.

    `details.spec` must be the spec to report: the label-decoded one for our containers,
    the inspected one otherwise. `image` overrides `details.spec.image` (pass the image as
    given, from the labels). `managed` is False for a container this agent does not own.
    """

    details: ContainerDetails
    image: str | None = None
    managed: bool = True

    @property
    def reported_image(self) -> str:
        if self.image is not None:
            return self.image
        return self.details.spec.image or self.details.image


def image_version(image: str) -> str:
    """Kanto's `findContainerVersion` (§5.3): the tag or digest of an image, else `n/a`."""
    name = image[image.rfind("/") + 1 :]
    for separator in ("@", ":"):
        at = name.find(separator)
        if at != -1 and at != len(name) - 1:
            return name[at + 1 :]
    return NOT_AVAILABLE


def format_port(port: PortMapping) -> str:
    """Kanto's `PortMappingToString`: `[<ip>:]<port>[-<end>]:<container port>[/<proto>]`."""
    text = ""
    if port.host_ip and port.host_ip != "0.0.0.0":
        text += f"{port.host_ip}:"
    if port.host_port != 0:
        text += str(port.host_port)
        if port.host_port_end not in (0, port.host_port):
            text += f"-{port.host_port_end}"
    if port.container_port != 0:
        text += f":{port.container_port}"
    if port.protocol:
        text += f"/{port.protocol}"
    return text


def format_device(device: DeviceMapping) -> str:
    """Kanto's `DeviceMappingToString`: the non-empty parts joined by `:`."""
    return ":".join(
        part for part in (device.host_path, device.container_path, device.permissions) if part
    )


def format_mount(mount: MountPoint) -> str:
    return f"{mount.source}:{mount.destination}:{mount.propagation.value}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _spec_parameters(spec: ContainerSpec, image: str, verbose: bool) -> list[tuple[str, str]]:
    """Parameters 1-25 of §5.4 (the configuration), in Kanto's order."""
    out: list[tuple[str, str]] = []
    add = out.append
    if verbose or image:
        add(("image", image))
    if verbose or spec.domain_name != f"{spec.name}-domain":
        add(("domainName", spec.domain_name))
    if verbose or spec.host_name != f"{spec.name}-host":
        add(("hostName", spec.host_name))
    if verbose or spec.terminal:
        add(("terminal", _bool(spec.terminal)))
    if verbose or spec.interactive:
        add(("interactive", _bool(spec.interactive)))
    if verbose or spec.privileged:
        add(("privileged", _bool(spec.privileged)))
    restart = spec.restart
    if verbose or restart.type is not RestartPolicyType.UNLESS_STOPPED:
        add(("restartPolicy", restart.type.value))
    if verbose or restart.max_retries != 0:
        add(("restartMaxRetries", str(restart.max_retries)))
    if verbose or restart.timeout != 0:
        add(("restartTimeout", duration_string(restart.timeout)))
    out += [("device", format_device(device)) for device in spec.devices]
    out += [("port", format_port(port)) for port in spec.ports]
    if verbose or spec.network is not NetworkMode.BRIDGE:
        add(("network", spec.network.value))
    out += [("host", host) for host in spec.extra_hosts]
    log = spec.log
    json_file = log.driver is LogDriver.JSON_FILE
    if verbose or log.driver is not LogDriver.JSON_FILE:
        add(("logDriver", log.driver.value))
    if json_file and (verbose or log.max_files != 2):
        add(("logMaxFiles", str(log.max_files)))
    max_size = size_text(log.max_size)
    if json_file and (verbose or (max_size and max_size != "100M")):
        add(("logMaxSize", max_size))
    if json_file and log.root_dir:
        add(("logPath", log.root_dir))
    if verbose or log.mode is not LogMode.BLOCKING:
        add(("logMode", log.mode.value))
    non_blocking = log.mode is LogMode.NON_BLOCKING
    buffer_size = size_text(log.max_buffer_size)
    if non_blocking and (verbose or (buffer_size and buffer_size != "1M")):
        add(("logMaxBufferSize", buffer_size))
    if spec.resources is not None:
        # Only the limits that are set, in verbose mode too (CM's from_containers_test).
        resources = spec.resources
        for key, size in (
            ("memory", resources.memory),
            ("memoryReservation", resources.memory_reservation),
            ("memorySwap", resources.memory_swap),
        ):
            if size is not None:
                add((key, size.text))
    out += [("mount", format_mount(mount)) for mount in spec.mounts]
    out += [("env", env) for env in spec.env]
    out += [("cmd", cmd) for cmd in spec.cmd]
    return out


def configuration_parameters(spec: ContainerSpec) -> list[tuple[str, str]]:
    """Every configuration parameter of `spec` by its Kanto key (verbose), e.g. for a plan's
    field-by-field differences."""
    return _spec_parameters(spec, spec.image, verbose=True)


def _state_parameters(state: ContainerState, verbose: bool) -> list[tuple[str, str]]:
    """Parameters 26-28 of §5.4."""
    out = [("status", state.status.value)]
    running = state.status is ContainerStatus.RUNNING
    if verbose or (state.finished_at and not running):
        out.append(("finishedAt", state.finished_at))
    if verbose or (state.exit_code != 0 and not running):
        out.append(("exitCode", str(state.exit_code)))
    return out


def container_parameters(
    details: ContainerDetails, *, verbose: bool, image: str | None = None
) -> list[KeyValuePair]:
    """The parameters of one CONTAINER node, in Kanto's order (§5.4).

    `details.spec` is reported as is (pass the label-decoded spec for our containers);
    `image` overrides the image shown (the image as given). `manuallyStopped` is not
    known to the engine and is reported as false; `startedSuccessfullyBefore` is true
    once the container has a start time.
    """
    spec = details.spec
    shown_image = image if image is not None else (spec.image or details.image)
    pairs = _spec_parameters(spec, shown_image, verbose)
    state = details.state
    pairs += _state_parameters(state, verbose)
    pairs.append(("created", details.created))
    running = state.status is ContainerStatus.RUNNING
    if verbose or state.restart_count != 0:
        pairs.append(("restartCount", str(state.restart_count)))
    if verbose:  # Kanto: also when true and stopped; here it is never known to be true
        pairs.append(("manuallyStopped", "false"))
    started_before = bool(state.started_at)
    if verbose or (started_before and not running):
        pairs.append(("startedSuccessfullyBefore", _bool(started_before)))
    return [KeyValuePair(key=key, value=value) for key, value in pairs]


def root_node_id(domain: str) -> str:
    return f"{domain}-update-agent"


def container_node_id(domain: str, name: str) -> str:
    return f"{domain}:{name}"


def build_inventory(
    domain: str,
    agent_version: str,
    containers: Sequence[InventoryContainer],
    *,
    verbose: bool,
    mark_unmanaged: bool = False,
) -> Inventory:
    """The inventory payload (§5.2): the agent node, one node per container, associations.

    Containers are reported in the order given (the caller sorts them). With
    `mark_unmanaged` (manage: labelled), containers this agent does not own get a last
    parameter `managed=false` (ours).
    """
    root = root_node_id(domain)
    nodes = [
        SoftwareNode(
            id=root,
            version=agent_version,
            name=AGENT_NAME,
            parameters=[KeyValuePair(key="domain", value=domain)],
            type=SoftwareType.APPLICATION,
        )
    ]
    associations = []
    for container in containers:
        node_id = container_node_id(domain, container.details.name)
        image = container.reported_image
        parameters = container_parameters(container.details, verbose=verbose, image=image)
        if mark_unmanaged and not container.managed:
            parameters.append(UNMANAGED_PARAMETER)  # frozen: shared
        nodes.append(
            SoftwareNode(
                id=node_id,
                version=image_version(image),
                parameters=parameters,
                type=SoftwareType.CONTAINER,
            )
        )
        associations.append(Association(source_id=root, target_id=node_id))
    return Inventory(software_nodes=nodes, associations=associations)
