"""Build tiny Docker images from the host's static busybox, without any docker CLI.

Tests need real images that differ in config and content (v1 vs v2), pushed to the local
registry or loaded into the private dockerd, and benchmarks need images of a given size.
Images have two layers: a cached busybox base layer shared by every image (so pushes and
pulls of many images stay fast) and a small per-spec layer with `/marker` and optional
incompressible padding. Everything is deterministic: the same spec gives the same digests.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import io
import json
import platform
import random
import subprocess
import tarfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cua_dev.netns import NetNamespace, NetnsHTTPConnection
from cua_dev.unixhttp import engine_request

__all__ = [
    "LONG_RUNNING_CMD",
    "BuiltImage",
    "Healthcheck",
    "ImageFactory",
    "ImageSpec",
    "Layer",
    "RegistryError",
    "build_image",
    "docker_archive",
    "load_image",
    "push_image",
    "split_reference",
]

BUSYBOX = "/bin/busybox"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Runs until stopped and exits at once on SIGTERM (a bare `sleep` as PID 1 ignores SIGTERM,
# so every `docker stop` would wait the full grace period).
LONG_RUNNING_CMD = ("sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait")
_NS_PER_S = 1_000_000_000
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """The image's HEALTHCHECK (Docker config `Healthcheck`)."""

    test: Sequence[str]  # e.g. ("CMD-SHELL", "test -f /tmp/ok")
    interval_s: float = 1.0
    timeout_s: float = 1.0
    retries: int = 3
    start_period_s: float = 0.0


@dataclass(frozen=True)
class ImageSpec:
    """What an image contains and how its containers run by default."""

    cmd: Sequence[str] | None = LONG_RUNNING_CMD
    entrypoint: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: Sequence[str] = ()  # "8080/tcp", "53/udp"
    healthcheck: Healthcheck | None = None
    marker: str = ""  # written to /marker: makes v1 and v2 of an image really differ
    # written to /base in the base layer: a base layer no other image has (one the engine
    # cannot know from an earlier pull)
    base: str = ""
    workdir: str = ""
    stop_signal: str = ""
    # Adds /padding of incompressible bytes so the unpacked image (the engine's `Size`) is
    # about this many MiB; the download is ~1 MiB less (the compressed busybox base).
    size_mb: float = 0.0


@dataclass(frozen=True, slots=True)
class Layer:
    tar: bytes  # uncompressed (docker save format)
    diff_id: str  # sha256 of `tar`
    gz: bytes  # gzip-compressed (registry blob)
    digest: str  # sha256 of `gz`


@dataclass(frozen=True, slots=True)
class BuiltImage:
    config: bytes
    layers: tuple[Layer, ...]

    @property
    def config_digest(self) -> str:
        """Also the image ID the engine reports (`sha256:...`)."""
        return _sha256(self.config)

    @property
    def image_id(self) -> str:
        return self.config_digest

    @property
    def manifest(self) -> bytes:
        """The registry manifest (schema 2); its sha256 is the repo digest."""
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "size": len(self.config),
                "digest": self.config_digest,
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "size": len(layer.gz), "digest": layer.digest}
                for layer in self.layers
            ],
        }
        return json.dumps(doc, indent=3).encode()

    @property
    def manifest_digest(self) -> str:
        return _sha256(self.manifest)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _gzip(data: bytes, level: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=level, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _make_layer(tar: bytes, level: int = 6) -> Layer:
    gz = _gzip(tar, level)
    return Layer(tar=tar, diff_id=_sha256(tar), gz=gz, digest=_sha256(gz))


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    """A tar entry with fixed owner and mtime, so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _tar(
    dirs: Iterable[tuple[str, int]],
    files: Iterable[tuple[str, bytes, int]],
    links: Iterable[tuple[str, str]] = (),
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, mode in sorted(dirs):
            tar.addfile(_info(name, tarfile.DIRTYPE, mode))
        for name, data, mode in sorted(files):
            tar.addfile(_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        for name, target in sorted(links):
            tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, link=target))
    return buf.getvalue()


@functools.cache
def _base_layer(base: str) -> Layer:
    """The base layer: busybox with a symlink per applet, and `/base` if `base` is given.
    Built once per process (~2 MB)."""
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    listing = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    applets = [a for a in listing.stdout.split() if a and "/" not in a and a != "busybox"]
    dirs = [(d, 0o755) for d in ("bin", "etc", "root", "usr", "usr/bin", "var", "proc", "sys")]
    dirs += [("dev", 0o755), ("tmp", 0o1777)]
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    files = [
        ("bin/busybox", binary, 0o755),
        ("etc/passwd", passwd, 0o644),
        ("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644),
    ]
    if base:
        files.append(("base", base.encode(), 0o644))
    links = [(f"bin/{applet}", "busybox") for applet in applets]
    return _make_layer(_tar(dirs, files, links))


def _spec_layer(spec: ImageSpec) -> Layer:
    files = [("marker", spec.marker.encode(), 0o644)]
    level = 6
    if spec.size_mb > 0:
        base = len(_base_layer(spec.base).tar)
        size = max(0, int(spec.size_mb * _MB) - base)
        seed = hashlib.sha256(f"{spec.marker}/{size}".encode()).digest()
        files.append(("padding", random.Random(seed).randbytes(size), 0o644))
        level = 0  # incompressible anyway: store, don't waste time deflating
    dirs = []
    if spec.workdir.strip("/"):
        parts = spec.workdir.strip("/").split("/")
        dirs = [("/".join(parts[: i + 1]), 0o755) for i in range(len(parts))]
    return _make_layer(_tar(dirs, files), level)


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def build_image(spec: ImageSpec) -> BuiltImage:
    """The image's layers and config JSON."""
    layers = (_base_layer(spec.base), _spec_layer(spec))
    env = {"PATH": "/usr/bin:/bin", **spec.env}
    config: dict[str, object] = {
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Cmd": list(spec.cmd) if spec.cmd is not None else None,
        "Entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "Labels": dict(spec.labels) or None,
        "WorkingDir": spec.workdir,
    }
    if spec.exposed_ports:
        config["ExposedPorts"] = {port: {} for port in spec.exposed_ports}
    if spec.stop_signal:
        config["StopSignal"] = spec.stop_signal
    if spec.healthcheck is not None:
        hc = spec.healthcheck
        config["Healthcheck"] = {
            "Test": list(hc.test),
            "Interval": int(hc.interval_s * _NS_PER_S),
            "Timeout": int(hc.timeout_s * _NS_PER_S),
            "Retries": hc.retries,
            "StartPeriod": int(hc.start_period_s * _NS_PER_S),
        }
    doc = {
        "architecture": _architecture(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cua_dev.images"}],
    }
    return BuiltImage(config=json.dumps(doc, sort_keys=True).encode(), layers=layers)


def docker_archive(spec: ImageSpec | BuiltImage, tags: Sequence[str]) -> bytes:
    """The image in `docker save` format (manifest.json, config, one layer.tar per layer)."""
    image = spec if isinstance(spec, BuiltImage) else build_image(spec)
    config_name = image.config_digest.removeprefix("sha256:") + ".json"
    layer_names = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": list(tags), "Layers": layer_names}]
    files = [
        (config_name, image.config, 0o644),
        ("manifest.json", json.dumps(manifest).encode(), 0o644),
    ]
    files += [
        (name, layer.tar, 0o644) for name, layer in zip(layer_names, image.layers, strict=True)
    ]
    dirs = [(name.split("/")[0], 0o755) for name in layer_names]
    return _tar(dirs, files)


def load_image(docker_host_or_socket: str, spec: ImageSpec | BuiltImage, tag: str) -> str:
    """Load the image into a dockerd (`POST /images/load`) tagged `tag`; return its ID."""
    image = spec if isinstance(spec, BuiltImage) else build_image(spec)
    status, body = engine_request(
        docker_host_or_socket,
        "POST",
        "/images/load?quiet=1",
        body=docker_archive(image, [tag]),
        headers={"Content-Type": "application/x-tar"},
        timeout=120.0,
    )
    if status != 200 or b'"error' in body:
        raise RuntimeError(f"loading image {tag} failed: {status} {body[:500]!r}")
    return image.image_id


def split_reference(reference: str) -> tuple[str, str, str]:
    """`host:port/repo/path:tag` -> (registry, repository, tag)."""
    registry, _, rest = reference.partition("/")
    if not rest:
        raise ValueError(f"image reference {reference!r} has no registry host")
    repository, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        repository, tag = rest, "latest"
    return registry, repository, tag


class RegistryError(RuntimeError):
    """The registry refused a request of the push protocol."""


def _registry_call(
    registry: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    netns: NetNamespace | None = None,
) -> http.client.HTTPResponse:
    conn = (
        http.client.HTTPConnection(registry, timeout=120)
        if netns is None
        else NetnsHTTPConnection(netns, registry, timeout=120)
    )
    conn.request(method, target, body=body, headers=dict(headers or {}))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def _push_blob(
    registry: str, repository: str, digest: str, data: bytes, netns: NetNamespace | None
) -> None:
    target = f"/v2/{repository}/blobs/{digest}"
    if _registry_call(registry, "HEAD", target, netns=netns).status == 200:
        return
    resp = _registry_call(registry, "POST", f"/v2/{repository}/blobs/uploads/", netns=netns)
    location = resp.getheader("Location")
    if resp.status != 202 or not location:
        raise RegistryError(f"blob upload to {registry}/{repository} refused: {resp.status}")
    parts = urllib.parse.urlsplit(location)
    query = "&".join(q for q in (parts.query, urllib.parse.urlencode({"digest": digest})) if q)
    resp = _registry_call(
        registry,
        "PUT",
        f"{parts.path}?{query}",
        body=data,
        headers={"Content-Type": "application/octet-stream"},
        netns=netns,
    )
    if resp.status != 201:
        raise RegistryError(f"blob {digest} upload to {registry}/{repository}: {resp.status}")


def push_image(
    registry: str,
    repository: str,
    tag: str,
    spec: ImageSpec | BuiltImage,
    *,
    netns: NetNamespace | None = None,
) -> str:
    """Push the image with the distribution API v2 (plain HTTP); return the manifest digest.
    `netns`: the registry listens inside that network namespace (the stack's)."""
    image = spec if isinstance(spec, BuiltImage) else build_image(spec)
    for layer in image.layers:
        _push_blob(registry, repository, layer.digest, layer.gz, netns)
    _push_blob(registry, repository, image.config_digest, image.config, netns)
    resp = _registry_call(
        registry,
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        body=image.manifest,
        headers={"Content-Type": MANIFEST_V2},
        netns=netns,
    )
    if resp.status != 201:
        raise RegistryError(f"manifest {repository}:{tag} push to {registry}: {resp.status}")
    return image.manifest_digest


class ImageFactory:
    """Builds, pushes and/or loads test images by name; the `image_factory` fixture.

    `factory("eclipse/app", "1.0", marker="v1")` pushes to the registry and returns the full
    reference `127.0.0.1:<port>/eclipse/app:1.0`. Pushes are remembered, so asking again
    for the same reference and spec is free.
    """

    def __init__(
        self,
        registry: str,
        docker_host: str | None = None,
        netns: NetNamespace | None = None,
    ) -> None:
        self.registry = registry
        self.docker_host = docker_host
        self.netns = netns
        self.images: dict[str, BuiltImage] = {}  # reference -> last image made for it
        self._built: dict[str, BuiltImage] = {}
        self._pushed: set[tuple[str, str]] = set()

    def build(self, spec: ImageSpec) -> BuiltImage:
        key = repr(spec)
        if key not in self._built:
            self._built[key] = build_image(spec)
        return self._built[key]

    def __call__(
        self,
        name: str,
        tag: str = "latest",
        *,
        push: bool = True,
        load: bool = False,
        spec: ImageSpec | None = None,
        **fields: Any,
    ) -> str:
        """Make image `<registry>/<name>:<tag>` from `spec` and/or ImageSpec `fields`."""
        spec = dataclasses.replace(spec or ImageSpec(), **fields)
        image = self.build(spec)
        reference = f"{self.registry}/{name}:{tag}"
        if push and (reference, image.manifest_digest) not in self._pushed:
            push_image(self.registry, name, tag, image, netns=self.netns)
            self._pushed.add((reference, image.manifest_digest))
        if load:
            if self.docker_host is None:
                raise ValueError("ImageFactory has no docker_host to load images into")
            load_image(self.docker_host, image, reference)
        self.images[reference] = image
        return reference
