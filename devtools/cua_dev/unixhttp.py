"""Tiny synchronous HTTP client over a unix socket, for the test stack's Docker Engine.

The stack and the image builder must talk to the private dockerd without an event loop
(they run in sync fixtures and at interpreter exit), so this uses only `http.client`.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode

__all__ = [
    "RawEngine",
    "UnixHTTPConnection",
    "demultiplex",
    "docker_exec",
    "engine_json",
    "engine_request",
    "socket_path_of",
]


class UnixHTTPConnection(http.client.HTTPConnection):
    """`HTTPConnection` whose transport is a unix stream socket instead of TCP."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_path_of(docker_host_or_socket: str) -> str:
    """Accept `unix:///path/docker.sock` or a bare path; return the path."""
    prefix = "unix://"
    if docker_host_or_socket.startswith(prefix):
        return docker_host_or_socket[len(prefix) :]
    if "://" in docker_host_or_socket:
        raise ValueError(f"not a unix socket docker host: {docker_host_or_socket!r}")
    return docker_host_or_socket


def engine_request(
    docker_host_or_socket: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One request to the Engine API; returns (status, body). Never raises on HTTP errors."""
    conn = UnixHTTPConnection(socket_path_of(docker_host_or_socket), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def engine_json(
    docker_host_or_socket: str,
    method: str,
    path: str,
    payload: Any = None,
    *,
    timeout: float = 60.0,
) -> Any:
    """A JSON request; raises `RuntimeError` with the engine's message on a non-2xx status."""
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, data = engine_request(
        docker_host_or_socket, method, path, body, headers, timeout=timeout
    )
    if not 200 <= status < 300:
        raise RuntimeError(
            f"engine {method} {path} -> {status}: {data.decode(errors='replace')[:500]}"
        )
    return json.loads(data) if data.strip() else None


def demultiplex(stream: bytes) -> bytes:
    """stdout and stderr of a non-TTY attach stream (8-byte frame headers), in order."""
    out, index = [], 0
    while index + 8 <= len(stream):
        size = int.from_bytes(stream[index + 4 : index + 8], "big")
        out.append(stream[index + 8 : index + 8 + size])
        index += 8 + size
    return b"".join(out)


def docker_exec(
    docker_host_or_socket: str, container: str, argv: list[str], *, timeout: float = 30.0
) -> tuple[int, str]:
    """Run `argv` in a running container (`docker exec`); return (exit code, output)."""
    created = engine_json(
        docker_host_or_socket,
        "POST",
        f"/containers/{container}/exec",
        {"Cmd": argv, "AttachStdout": True, "AttachStderr": True},
        timeout=timeout,
    )
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    status, stream = engine_request(
        docker_host_or_socket,
        "POST",
        f"/exec/{created['Id']}/start",
        body,
        {"Content-Type": "application/json"},
        timeout=timeout,
    )
    if status != 200:
        raise RuntimeError(f"exec in {container} -> {status}: {stream[:300]!r}")
    info = engine_json(docker_host_or_socket, "GET", f"/exec/{created['Id']}/json")
    return int(info["ExitCode"]), demultiplex(stream).decode(errors="replace")


class RawEngine:
    """The Engine API of one unix-socket dockerd, raw: what tests and benchmarks check the
    agent's adapter against (never through `cua.engine`). Calls block (they are short)."""

    def __init__(self, docker_host_or_socket: str, *, timeout: float = 120.0) -> None:
        self.host = docker_host_or_socket
        self.timeout = timeout

    def json(self, method: str, path: str, payload: Any = None, **params: str) -> Any:
        """A JSON call; raises `RuntimeError` with the engine's message on a non-2xx status."""
        query = "?" + urlencode(params) if params else ""
        return engine_json(self.host, method, path + query, payload, timeout=self.timeout)

    def status(self, method: str, path: str, **params: str) -> int:
        """A call whose answer is only its status."""
        query = "?" + urlencode(params) if params else ""
        status, _ = engine_request(self.host, method, path + query, timeout=self.timeout)
        return status

    def container(self, name: str) -> Any:
        return self.json("GET", f"/containers/{name}/json")

    def image(self, reference: str) -> Any:
        return self.json("GET", f"/images/{reference}/json")

    def pull(self, reference: str) -> None:
        """`POST /images/create` to its end; raises `RuntimeError` naming a failed pull."""
        repository, _, tag = reference.rpartition(":")
        if "/" in tag or not repository:
            repository, tag = reference, "latest"
        query = urlencode({"fromImage": repository, "tag": tag})
        status, data = engine_request(
            self.host, "POST", f"/images/create?{query}", timeout=self.timeout
        )
        errors = [
            line for line in data.splitlines() if line.strip() and "error" in json.loads(line)
        ]
        if not 200 <= status < 300 or errors:
            raise RuntimeError(f"pull {reference} -> {status}: {(errors or [data])[0]!r}")

    def forget(self, *references: str) -> None:
        """Remove images (by force); one that is not there is fine."""
        for reference in references:
            status = self.status("DELETE", f"/images/{reference}", force="1")
            if status not in (200, 404):
                raise RuntimeError(f"remove image {reference} -> {status}")
