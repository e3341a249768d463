"""The local test stack: a private dockerd, a docker registry and a mosquitto broker.

dockerd and the registry it pulls from run in a network namespace of their own
(`cua_dev.netns`): containers get addresses on dockerd's default bridge and published ports
exist, only inside that namespace, which has no route out. The agent still reaches dockerd
over its unix socket and mosquitto on 127.0.0.1 of the machine's own namespace; tests reach
containers and the registry only from inside the namespace (`stack.netns`).

Everything lives under one short temporary directory (unix socket paths are limited to
108 bytes) and every process is started by us and stopped by its PID, in order, also when a
start fails and at interpreter exit. Use it as `with LocalStack() as stack: ...` or with
explicit `start()` / `stop()`; `python -m cua_dev.stack` runs it for humans.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from cua_dev.netns import NetNamespace, NetnsHTTPConnection
from cua_dev.processes import (
    ServiceError,
    ServiceProcess,
    alive,
    descendants,
    free_port,
    free_ports,
    processes_referencing,
    stop_pid,
)
from cua_dev.tlsgen import PkiFiles, generate_tls
from cua_dev.unixhttp import engine_json, engine_request

__all__ = ["LocalStack", "PkiFiles", "ServiceError"]

_MNT_DETACH = 2
_live_stacks: set[LocalStack] = set()
_live_lock = threading.Lock()


def _stop_live_stacks() -> None:
    """atexit safety net: a stack someone forgot to stop must not outlive the interpreter."""
    with _live_lock:
        stacks = list(_live_stacks)
    for stack in stacks:
        with contextlib.suppress(Exception):
            stack.stop()


atexit.register(_stop_live_stacks)


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True


# A registry name dockerd lists as insecure (never resolved: the agent download tests that
# use it reach the stack's registry through their own connection hook).
INSECURE_REGISTRY = "cua-insecure.test:5000"
# dockerd's mirrors of Docker Hub, in its order (never resolved either: the first one is
# down, the second reached as the stack's registry, by the same tests).
HUB_MIRRORS = ("https://cua-down-mirror.test", "http://cua-mirror.test:5000")
# dockerd's HTTP proxy, with a login (which `GET /info` hides), for every registry but none
# in fact (NO_PROXY *): what the agent reads of it is tested; no pull goes through it.
ENGINE_PROXY = {
    "HTTPS_PROXY": "http://cua:s3cret@cua-proxy.test:3128",
    "HTTP_PROXY": "http://cua-proxy.test:3129",
    "NO_PROXY": "*",
}


class LocalStack:
    """A private dockerd + docker registry + mosquitto (plain, TLS and password listeners)."""

    mqtt_user = "cua-test"

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        self._start_timeout = start_timeout
        self._tmpdir: Path | None = None
        self._services: dict[str, ServiceProcess] = {}
        self._seen_pids: set[int] = set()
        self._tls: PkiFiles | None = None
        self._netns: NetNamespace | None = None
        self.mqtt_password = secrets.token_urlsafe(12)
        self._mqtt_port = self._mqtts_port = self._mqtt_auth_port = self._registry_port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the temp dir and start dockerd, the registry and mosquitto. On any failure
        everything already started is stopped and the temp dir removed before raising."""
        if self._tmpdir is not None:
            raise RuntimeError("LocalStack already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="cua-", dir="/tmp"))
        with _live_lock:
            _live_stacks.add(self)
        try:
            self._tls = generate_tls(self._tmpdir / "tls")
            self._netns = NetNamespace()
            self._start_dockerd()
            self._start_with_fresh_ports(self._new_registry_port, self.start_registry)
            self._start_with_fresh_ports(self._new_mqtt_ports, self.start_mosquitto)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every service by PID (containers first so no containerd shim survives),
        kill any straggler that still references the temp dir, unmount, remove the dir."""
        if self._tmpdir is None:
            return
        tmpdir = self._tmpdir
        errors: list[Exception] = []
        # Every step runs even if an earlier one failed: a leaked dockerd is worse than a
        # late exception.
        for step in (
            self.stop_registry,
            self.stop_mosquitto,
            self._stop_dockerd,
            lambda: self._stop_stragglers(tmpdir),
            lambda: self._unmount_under(tmpdir),
            self._close_netns,
        ):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        shutil.rmtree(tmpdir, ignore_errors=True)
        self._tmpdir = None
        with _live_lock:
            _live_stacks.discard(self)
        if errors:
            raise errors[0]

    # -- individual services -----------------------------------------------------------------

    def start_registry(self) -> None:
        """(Re)start the registry on the same port with the same storage."""
        argv = self.netns.nsenter(["docker-registry", "serve", str(self.tmpdir / "registry.yml")])
        svc = self._service("registry", argv)
        svc.start(self._registry_ready, timeout=self._start_timeout)
        self._remember(svc)

    def stop_registry(self) -> None:
        self._stop_service("registry")

    @contextlib.contextmanager
    def tls_registry(self) -> Iterator[str]:
        """A second registry on the same storage (the same images), in HTTPS with the test
        PKI's server certificate, at `127.0.0.1:<port>` inside the namespace (a loopback
        registry in TLS); stopped by its PID at the end."""
        port = free_port()
        config = self.tmpdir / "registry-tls.yml"
        tls = self.tls
        config.write_text(
            self._registry_config(port)
            + f"  tls:\n    certificate: {tls.server_cert}\n    key: {tls.server_key}\n"
        )
        argv = self.netns.nsenter(["docker-registry", "serve", str(config)])
        svc = ServiceProcess("registry-tls", argv, self.tmpdir / "registry-tls.log")
        address = f"127.0.0.1:{port}"

        def ready() -> bool:  # it answers plain HTTP with a 400 saying it speaks HTTPS
            conn = NetnsHTTPConnection(self.netns, address, timeout=2.0)
            try:
                conn.request("GET", "/v2/")
                return conn.getresponse().status == 400
            finally:
                conn.close()

        svc.start(ready, timeout=self._start_timeout)
        self._remember(svc)
        try:
            yield address
        finally:
            svc.stop()

    def start_mosquitto(self) -> None:
        """(Re)start the broker on the same three ports."""
        svc = self._service("mosquitto", ["mosquitto", "-c", str(self.tmpdir / "mosquitto.conf")])
        ports = (self._mqtt_port, self._mqtts_port, self._mqtt_auth_port)
        svc.start(lambda: all(_tcp_open(p) for p in ports), timeout=self._start_timeout)
        self._remember(svc)

    def stop_mosquitto(self) -> None:
        self._stop_service("mosquitto")

    @contextlib.contextmanager
    def mosquitto_frozen(self) -> Iterator[None]:
        """The broker frozen (SIGSTOP to its PID, SIGCONT on leaving): connections stay
        open, but nothing is read, forwarded or acknowledged, as a stalled broker."""
        svc = self._services.get("mosquitto")
        if svc is None or svc.pid is None:
            raise RuntimeError("mosquitto is not running")
        pid = svc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def ensure_running(self) -> None:
        """Restart any service a previous test stopped (or that died), on its same port."""
        for name, start in (
            ("dockerd", self._start_dockerd),
            ("registry", self.start_registry),
            ("mosquitto", self.start_mosquitto),
        ):
            svc = self._services.get(name)
            if svc is None or svc.proc is None or svc.proc.poll() is not None:
                if svc is not None:
                    svc.stop()
                start()

    def remove_all_containers(self) -> None:
        """Force-remove every container of the private dockerd (test isolation)."""
        containers = engine_json(self.docker_socket, "GET", "/containers/json?all=1")
        for container in containers:
            status, body = engine_request(
                self.docker_socket, "DELETE", f"/containers/{container['Id']}?force=1&v=1"
            )
            if status not in (204, 404):
                raise RuntimeError(f"cannot remove container: {status} {body[:300]!r}")

    def pids(self) -> set[int]:
        """Every PID this stack started and that is still known: the services, their
        descendants (containerd, shims) and anything referencing the temp dir."""
        found = {svc.pid for svc in self._services.values() if svc.pid is not None}
        if self._tmpdir is not None:
            # containerd shims re-parent to init but name our dir on their command line;
            # the container processes are their children.
            found |= processes_referencing(str(self._tmpdir))
        found |= descendants(sorted(found))
        self._seen_pids |= found
        return found | {pid for pid in self._seen_pids if alive(pid)}

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise RuntimeError("LocalStack is not started")
        return self._tmpdir

    @property
    def netns(self) -> NetNamespace:
        """The network namespace of dockerd, its containers and the registry."""
        if self._netns is None:
            raise RuntimeError("LocalStack is not started")
        return self._netns

    @property
    def docker_socket(self) -> str:
        return str(self.tmpdir / "docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def registry(self) -> str:
        """`127.0.0.1:<port>` inside the namespace (a port also free on the machine's own
        loopback, so a push that forgot the namespace is refused, not misdelivered)."""
        return f"127.0.0.1:{self._registry_port}"

    async def registry_connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to the registry, made inside the stack's network namespace (for
        `cua_dev.proxy`)."""
        return await asyncio.open_connection(sock=await self.registry_socket(), limit=1 << 20)

    async def registry_socket(self) -> socket.socket:
        """A connected (non-blocking) TCP socket to the registry, made inside the stack's
        network namespace (the bench's agent downloads reach it this way)."""
        return await self.socket_to("127.0.0.1", self._registry_port)

    async def socket_to(self, host: str, port: int) -> socket.socket:
        """A connected (non-blocking) TCP socket to (host, port), made inside the stack's
        network namespace: a connector for the agent's registry client."""
        sock = await asyncio.to_thread(self.netns.connect, host, port)
        sock.setblocking(False)
        return sock

    @property
    def mqtt_port(self) -> int:
        return self._mqtt_port

    @property
    def mqtts_port(self) -> int:
        return self._mqtts_port

    @property
    def mqtt_auth_port(self) -> int:
        return self._mqtt_auth_port

    @property
    def broker_url(self) -> str:
        return f"tcp://127.0.0.1:{self._mqtt_port}"

    @property
    def tls(self) -> PkiFiles:
        if self._tls is None:
            raise RuntimeError("LocalStack is not started")
        return self._tls

    # -- internals ---------------------------------------------------------------------------

    def _service(self, name: str, argv: list[str]) -> ServiceProcess:
        svc = self._services.get(name)
        if svc is None:
            svc = ServiceProcess(name, argv, self.tmpdir / f"{name}.log")
            self._services[name] = svc
        return svc

    def _remember(self, svc: ServiceProcess) -> None:
        if svc.pid is not None:
            self._seen_pids.add(svc.pid)

    def _stop_service(self, name: str) -> None:
        svc = self._services.get(name)
        if svc is not None:
            svc.stop()

    def _start_with_fresh_ports(
        self, choose_ports: Callable[[], None], start: Callable[[], None], attempts: int = 3
    ) -> None:
        """A port found free may be taken by a parallel test run before the service binds
        it: then retry on other ports."""
        for attempt in range(attempts):
            choose_ports()
            try:
                start()
            except ServiceError:
                if attempt == attempts - 1:
                    raise
            else:
                return

    def _new_registry_port(self) -> None:
        self._registry_port = free_port()
        self._write_registry_config()

    def _new_mqtt_ports(self) -> None:
        self._mqtt_port, self._mqtts_port, self._mqtt_auth_port = free_ports(3)
        self._write_mosquitto_config()

    def _start_dockerd(self) -> None:
        d = self.tmpdir
        self._write_daemon_json()  # never the system /etc/docker/daemon.json
        # The default bridge (docker0) exists inside the namespace only. Without iptables
        # dockerd publishes ports through its userland proxy (docker-proxy, one per port),
        # which is all a namespace without a route out needs; setting up iptables chains
        # would add about 1.5 s to every start.
        argv = [
            "env",  # execs dockerd: same PID
            *(f"{name}={value}" for name, value in ENGINE_PROXY.items()),
            "dockerd",
            f"--config-file={d / 'daemon.json'}",
            f"--data-root={d / 'docker'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={d / 'docker.pid'}",
            f"--host=unix://{d / 'docker.sock'}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ]
        svc = self._service("dockerd", self.netns.nsenter(argv))
        svc.start(self._dockerd_ready, timeout=self._start_timeout)
        self._remember(svc)
        self.pids()  # record containerd's PID too

    def _write_daemon_json(self, insecure: Sequence[str] = ()) -> None:
        """The registry settings, in the file (a reload reads them again: `reloaded_engine`)."""
        settings = {
            "insecure-registries": ["127.0.0.0/8", INSECURE_REGISTRY, *insecure],
            "registry-mirrors": list(HUB_MIRRORS),
        }
        (self.tmpdir / "daemon.json").write_text(json.dumps(settings, indent=2) + "\n")

    @contextlib.contextmanager
    def reloaded_engine(self, insecure: Sequence[str]) -> Iterator[None]:
        """dockerd reloaded (SIGHUP, to its PID) with `insecure` registries (`host[:port]`)
        added to its own, as an operator changes them on a running engine; reloaded with
        its own again at the end. Each returns once `GET /info` says so."""
        pid = self._services["dockerd"].pid
        assert pid is not None

        def reload(names: Sequence[str]) -> None:
            self._write_daemon_json(names)
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + self._start_timeout
            while True:
                listed = engine_json(self.docker_socket, "GET", "/info")["RegistryConfig"]
                if set(names) | {INSECURE_REGISTRY} == set(listed["IndexConfigs"]) - {"docker.io"}:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dockerd did not reload its insecure registries {names}")
                time.sleep(0.05)

        reload(insecure)
        try:
            yield
        finally:
            reload(())

    def _stop_dockerd(self) -> None:
        svc = self._services.get("dockerd")
        if svc is None or svc.pid is None:
            return
        with contextlib.suppress(Exception):
            self.remove_all_containers()
        children = descendants([svc.pid])
        self._seen_pids |= children
        svc.stop(timeout=20.0)
        # dockerd stops its containerd itself; wait for that, then insist by PID.
        deadline = time.monotonic() + 10.0
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in children:
            if alive(pid):
                stop_pid(pid, timeout=5.0)

    def _dockerd_ready(self) -> bool:
        status, body = engine_request(self.docker_socket, "GET", "/_ping", timeout=2.0)
        return status == 200 and body == b"OK"

    def _registry_ready(self) -> bool:
        conn = NetnsHTTPConnection(self.netns, self.registry, timeout=2.0)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def _close_netns(self) -> None:
        if self._netns is not None:
            netns, self._netns = self._netns, None
            netns.close()

    def _write_registry_config(self) -> None:
        (self.tmpdir / "registry.yml").write_text(self._registry_config(self._registry_port))

    def _registry_config(self, port: int) -> str:
        return (
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.tmpdir / 'registry'}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )

    def _write_mosquitto_config(self) -> None:
        d, tls = self.tmpdir, self.tls
        passwd = d / "mosquitto.passwd"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwd), self.mqtt_user, self.mqtt_password],
            check=True,
            capture_output=True,
        )
        lines = [
            "per_listener_settings true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # As root mosquitto would switch to user `mosquitto`, which cannot read our
            # 0700 temp dir; `user root` keeps the current user.
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self._mqtt_port} 127.0.0.1",
            "allow_anonymous true",
            f"listener {self._mqtts_port} 127.0.0.1",
            "allow_anonymous true",
            f"cafile {tls.ca_cert}",
            f"certfile {tls.server_cert}",
            f"keyfile {tls.server_key}",
            "require_certificate true",
            f"listener {self._mqtt_auth_port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
        ]
        (d / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        secret = d / "mqtt-password"  # for humans using `python -m cua_dev.stack`
        secret.touch(mode=0o600)
        secret.write_text(self.mqtt_password + "\n")

    @staticmethod
    def _stop_stragglers(tmpdir: Path) -> None:
        """Anything still naming our dir (a shim whose containerd died first) goes by PID."""
        for pid in processes_referencing(str(tmpdir)):
            stop_pid(pid, timeout=5.0)

    @staticmethod
    def _unmount_under(directory: Path) -> None:
        """Detach any mount dockerd left under our dir (overlay, its bind-mounted data root),
        deepest first, so removing the dir never crosses into a mount."""
        prefix = str(directory) + "/"
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        targets = [f.split()[4] for f in lines if f.split()[4].startswith(prefix)]
        libc = ctypes.CDLL(None, use_errno=True)
        for target in sorted(set(targets), key=len, reverse=True):
            libc.umount2(target.encode(), _MNT_DETACH)

    def describe(self) -> str:
        """Human-readable endpoints (no password)."""
        return "\n".join(
            [
                f"tmpdir:        {self.tmpdir}",
                f"docker host:   {self.docker_host}",
                f"netns:         nsenter --net={self.netns.path} (dockerd, containers, registry)",
                f"registry:      {self.registry} (inside the netns)",
                f"mqtt:          {self.broker_url}",
                f"mqtts:         ssl://127.0.0.1:{self.mqtts_port} (client cert required)",
                f"mqtt (auth):   tcp://127.0.0.1:{self.mqtt_auth_port} user {self.mqtt_user}"
                f" password in {self.tmpdir / 'mqtt-password'}",
                f"tls ca:        {self.tls.ca_cert}",
                f"tls client:    {self.tls.client_cert} {self.tls.client_key}",
            ]
        )


def main(argv: list[str] | None = None) -> int:
    """Run the stack until Ctrl-C or SIGTERM, printing its endpoints."""
    import argparse

    argparse.ArgumentParser(
        prog="python -m cua_dev.stack",
        description="Start a private dockerd, a local registry and mosquitto (plain, TLS "
        "and with a password) on loopback, print their endpoints, and run until Ctrl-C or "
        "SIGTERM; then stop them and remove their files. For development and tests only.",
    ).parse_args(argv)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    with LocalStack() as stack:
        print(f"local stack up in {time.monotonic() - started:.1f} s")
        print(stack.describe(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
