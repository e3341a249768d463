"""Start and stop the test stack's service processes, each by its PID.

A service is a `subprocess.Popen` with its output in a log file. Stopping sends SIGTERM to
that PID, waits, then SIGKILLs it: never a kill by name, so parallel test runs (and any
system daemons) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "ServiceError",
    "ServiceProcess",
    "alive",
    "descendants",
    "free_port",
    "free_ports",
    "log_tail",
    "processes_referencing",
    "stop_pid",
]

_SETPRIV = shutil.which("setpriv")


class ServiceError(RuntimeError):
    """A stack service failed to start or to become ready (message includes its log tail)."""


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (the OS picks them; the
    sockets are held together so the same port is not handed out twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name.
    return stat[stat.rindex(")") + 2] not in ("Z", "X")


def _proc_entries() -> list[tuple[int, int, bytes]]:
    """(pid, ppid, cmdline) of every process we can read."""
    entries = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        entries.append((int(name), ppid, cmdline))
    return entries


def descendants(pids: Sequence[int]) -> set[int]:
    """Every live process whose ancestry includes one of `pids` (not `pids` themselves)."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _proc_entries():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def processes_referencing(text: str) -> set[int]:
    """PIDs whose command line contains `text` (our unique temp dir): the stack's processes,
    including ones re-parented away from dockerd such as containerd shims."""
    needle = text.encode()
    me = os.getpid()
    return {pid for pid, _, cmdline in _proc_entries() if needle in cmdline and pid != me}


def stop_pid(pid: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM `pid`, wait up to `timeout`, then SIGKILL it; reap it if it is our child."""
    # A reaped child's PID may already belong to someone else: never signal it.
    if (proc is not None and proc.poll() is not None) or (proc is None and not alive(pid)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _die_with_parent(argv: list[str]) -> list[str]:
    """Make the service get SIGTERM if the test process dies abruptly (kill -9): no orphan
    dockerd. `setpriv` (util-linux) sets it before exec; a `preexec_fn` would be unsafe
    in a process with threads. The signal fires when the creating *thread* exits, so it is
    only used from the main thread, whose life is the process's life."""
    if threading.current_thread() is not threading.main_thread() or not _SETPRIV:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class ServiceProcess:
    """One service: its command line, its log file, and the running `Popen` if started."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Start the process and poll `ready` until true; on failure stop it and raise
        `ServiceError` with the log tail."""
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                _die_with_parent(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal must not bypass our stop order
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise ServiceError(
                    f"{self.name} exited with status {code} while starting; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} not ready after {timeout:.0f} s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop by PID (SIGTERM, wait, SIGKILL). Idempotent."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_pid(proc.pid, timeout=timeout, proc=proc)
