"""A private network namespace for the test stack, and doors into it.

The stack's dockerd, its containers and the registry it pulls from live in a network
namespace of their own: containers get real addresses on dockerd's bridge and published
ports exist, but only there. The namespace has no route out, so nothing a test does with
containers can reach the machine's own network or the internet.

The namespace is made by a short-lived thread that calls `unshare(CLONE_NEWNET)` (network
namespaces are per thread) and opens its namespace file: that descriptor keeps the
namespace alive with no holder process, and it closes with our process, however that ends.
Processes enter it with `nsenter --net=<path>`; this process reaches into it with
`NetNamespace.connect` / `NetNamespace.new_socket`, which create the socket on a thread that has
entered the namespace (a socket stays in the namespace it was made in). Both check that the
thread really is in the namespace before making the socket, so traffic meant for a
container address can never leave from the machine's own namespace by mistake.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import http.client
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["NetNamespace", "NetNamespaceError", "NetnsHTTPConnection"]

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_T = TypeVar("_T")


class NetNamespaceError(RuntimeError):
    """The namespace could not be made or entered."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _thread_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def _on_new_thread(work: Callable[[], _T]) -> _T:
    """Run `work` on a fresh thread and return its result (or raise its exception): a thread
    that changed its namespace ends with `work`, so no other code ever runs in it."""
    result: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=run, name="cua-netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _set_link_up(ifname: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", ifname.encode(), 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(
            sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", ifname.encode(), flags | _IFF_UP)
        )


class NetNamespace:
    """A new, empty network namespace with `lo` up; `close()` lets it go."""

    def __init__(self, existing: str | None = None) -> None:
        """A new namespace, or with `existing` (a path such as `/proc/<pid>/ns/net`, e.g.
        a container's) that one, held open until `close()`."""
        if existing is None:
            self._fd = _on_new_thread(self._create)
        else:
            self._fd = os.open(existing, os.O_RDONLY | os.O_CLOEXEC)
        self._pid = os.getpid()
        self.inode = os.readlink(self.path)  # "net:[4026532177]"

    @staticmethod
    def _create() -> int:
        libc = _libc()
        if libc.unshare(_CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetNamespaceError(f"unshare(CLONE_NEWNET) failed: {os.strerror(errno)}")
        _set_link_up("lo")
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    @property
    def path(self) -> str:
        """A path naming the namespace for other processes (`nsenter --net=PATH`), valid
        while this process keeps it open."""
        if self._fd < 0:
            raise NetNamespaceError("network namespace is closed")
        return f"/proc/{self._pid}/fd/{self._fd}"

    def nsenter(self, argv: list[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace (nsenter execs it: same PID)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, work: Callable[[], _T]) -> _T:
        """Run `work` on a thread inside the namespace; sockets it makes stay there."""
        fd = self._fd

        def entered() -> _T:
            if _libc().setns(fd, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise NetNamespaceError(f"setns(CLONE_NEWNET) failed: {os.strerror(errno)}")
            if _thread_netns() != self.inode:
                raise NetNamespaceError("thread is not in the stack's network namespace")
            return work()

        return _on_new_thread(entered)

    def new_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """An unconnected socket made inside the namespace."""
        return self.run(lambda: socket.socket(family, kind))

    def connect(self, host: str, port: int, timeout: float = 10.0) -> socket.socket:
        """A TCP connection to `host:port` as seen from inside the namespace."""
        sock = self.new_socket()
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def exchange(self, host: str, port: int, data: bytes = b"", *, deadline: float = 10.0) -> bytes:
        """Connect to `host:port` inside the namespace, send `data`, close the sending
        side, return all that comes back. Retries refused or empty connections until
        `deadline` seconds have passed (a service just started may not listen yet)."""
        give_up = time.monotonic() + deadline
        while True:
            try:
                with self.connect(host, port, timeout=max(0.5, give_up - time.monotonic())) as sock:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    chunks = []
                    while chunk := sock.recv(65536):
                        chunks.append(chunk)
                reply = b"".join(chunks)
                if reply or time.monotonic() > give_up:
                    return reply
            except OSError:
                if time.monotonic() > give_up:
                    raise
            time.sleep(0.05)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


class NetnsHTTPConnection(http.client.HTTPConnection):
    """`HTTPConnection` whose TCP connection is made inside a `NetNamespace`."""

    def __init__(self, netns: NetNamespace, host: str, timeout: float = 60.0) -> None:
        super().__init__(host, timeout=timeout)
        self._netns = netns

    def connect(self) -> None:
        self.sock = self._netns.connect(self.host, self.port, timeout=self.timeout or 60.0)
