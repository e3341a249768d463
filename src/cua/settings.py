"""Settings of the update operations and the registry logins (the `update_agent` part of
the agent's config).

Plain values: `cua.config` fills them from the file and the flags, the update operations
(`cua.update`) and the engine adapter read them. Defaults follow Kanto where Kanto has the
setting, and our-behaviour.md where it does not (`mode`, `manage`, `strict`, pull and
download tuning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

# Limits of one incoming message (ours; Kanto has none). A message over a limit is refused
# with a failure naming the limit (its key in `update_agent`), before it is parsed further;
# nothing on the device is touched. The defaults fit 1,000 Leda-sized components.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # bytes of one MQTT payload
MAX_ACTIVITY_ID_LENGTH = 256  # characters
MAX_COMPONENTS = 1000  # components of the agent's domain in one desired state


def domain_file_part(domain: str) -> str:
    """`domain` as part of a file name in the state directory (its operation journal, its
    download cache): agents of several domains may share one state directory."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", domain)


@dataclass(frozen=True, slots=True)
class Limits:
    """The `update_agent` settings `max_message_size`, `max_activity_id_length`,
    `max_components`."""

    max_message_size: int = MAX_MESSAGE_SIZE
    max_activity_id_length: int = MAX_ACTIVITY_ID_LENGTH
    max_components: int = MAX_COMPONENTS


class Mode(StrEnum):
    """What a desired state does: run to the end by itself, or wait for commands (Kanto)."""

    STANDALONE = "standalone"
    ORCHESTRATED = "orchestrated"


class Manage(StrEnum):
    """Which containers the agent may change: the ones it labelled, or every one (Kanto)."""

    LABELLED = "labelled"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    domain: str = "containers"
    mode: Mode = Mode.STANDALONE
    manage: Manage = Manage.LABELLED
    system_containers: tuple[str, ...] = ()
    strict: bool = False
    verbose_inventory: bool = False
    pull_always: bool = False  # default: pull only when the image is missing (Kanto)
    stop_grace_period: float = 30.0  # seconds, SIGTERM -> SIGKILL (Kanto's default)
    # Pulls in flight at once in DOWNLOAD. The engine bounds its layer downloads itself
    # (dockerd's max-concurrent-downloads, 3 by default): a bound here only delays a pull's
    # start (manifest, and the create that waits for it). 16: more images than an update of
    # a device names, so the engine's pulls all start at once; with `download: agent`, at
    # most 16 images are fetched at once (each 3 blobs at a time).
    download_concurrency: int = 16
    progress_interval: float = 1.0  # min seconds between progress-only DOWNLOADING feedback
    # Actions whose engine work (create, start, state read) may be in flight at once;
    # 1 = one after the other, as Kanto. The feedback is the same either way.
    parallel_actions: int = 8
    # Activation means running (our-behaviour): a started container must stay up this many
    # seconds (0: success at start, as Kanto), and one with a HEALTHCHECK must report
    # healthy within `activation_timeout` seconds. 3 s: start-up crashes (bad config, a
    # missing file, a port taken) happen within the first second or two, Docker's restart
    # back-off (0.1 s, doubling) restarts a crashing container several times in that
    # time, and the window is paid once per update, not per container.
    activation_window: float = 3.0
    activation_timeout: float = 60.0
    # What one message may ask (message size, activityId length, components).
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    """Who downloads images (`by_agent`: the agent, into its cache; else the engine pulls),
    the bandwidth limit in bytes/s for all downloads (0: none) and the cache cap (bytes)."""

    by_agent: bool = True
    rate_limit: int = 0
    cache_max: int = 2 << 30


@dataclass(frozen=True, slots=True)
class RegistryCredentials:
    """A login to an image registry (`update_agent.registries`)."""

    username: str
    password: str = field(repr=False)  # never in reprs, logs or feedback
