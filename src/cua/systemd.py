"""systemd's readiness protocol (`sd_notify`), with the standard library only.

With `Type=notify`, systemd considers the service started only when it receives `READY=1`
on the datagram socket named by `NOTIFY_SOCKET`; the agent sends it once its first broker
connect attempt has ended (connected or not: a broker that is down is retried forever and
must not hold up boot, which waits for the unit).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", message, exc.strerror or exc)
        return False
    return True
