"""Registry manifests, read (pure): which blobs make an image for the engine's platform.

Media types (OCI image-spec and Docker's distribution schema 2): an image index / manifest
list names one manifest per platform; an image manifest names the config blob and the
layer blobs (compressed), with their sizes and digests. The config's `rootfs.diff_ids` are
the digests of the uncompressed layers, which is how an engine names the layers it holds.
Schema 1 manifests are refused (deprecated, unsigned content): `update_agent.download:
"engine"` still pulls them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest or config that cannot be used; the text names what is wrong."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str  # sha256:<hex>
    size: int


@dataclass(frozen=True, slots=True)
class ImageManifest:
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def download_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


def check_digest(digest: str, where: str) -> str:
    """`digest` if it is a sha256 digest (the only algorithm accepted), else ManifestError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ManifestError(f"{where}: unsupported digest {digest!r} (sha256 expected)")
    return digest


def _blob(entry: Any, where: str) -> Blob:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: not a descriptor")
    size = entry.get("size")
    if not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: bad size {size!r}")
    return Blob(check_digest(entry.get("digest", ""), where), size)


def _document(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as error:
        raise ManifestError(f"manifest is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    return data


def media_type(body: bytes, header: str) -> str:
    """The manifest's media type: its own `mediaType`, else the Content-Type header."""
    declared = _document(body).get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return header.partition(";")[0].strip()


def is_index(kind: str) -> bool:
    return kind in (DOCKER_LIST, OCI_INDEX)


def platform_matches(entry: dict[str, Any], wanted: Platform) -> bool:
    found = entry.get("platform") or {}
    if found.get("os") != wanted.os or found.get("architecture") != wanted.architecture:
        return False
    return not wanted.variant or found.get("variant", wanted.variant) == wanted.variant


def choose_from_index(body: bytes, wanted: Platform) -> str:
    """The digest of the manifest for `wanted` in an index; ManifestError naming the
    platforms there are when none fits."""
    entries = _document(body).get("manifests")
    if not isinstance(entries, list):
        raise ManifestError("manifest list has no `manifests`")
    for entry in entries:
        if isinstance(entry, dict) and platform_matches(entry, wanted):
            return check_digest(entry.get("digest", ""), "manifest list entry")
    offered = sorted(
        str(Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant", "")))
        for e in entries
        if isinstance(e, dict) and isinstance(p := e.get("platform") or {}, dict)
    )
    raise ManifestError(f"no manifest for platform {wanted} (offered: {', '.join(offered)})")


def read_manifest(body: bytes, kind: str) -> ImageManifest:
    """An image manifest's config and layers. ManifestError for other kinds."""
    if kind not in (DOCKER_MANIFEST, OCI_MANIFEST):
        raise ManifestError(f"unsupported manifest type {kind!r}")
    data = _document(body)
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no `layers`")
    return ImageManifest(
        config=_blob(data.get("config"), "manifest config"),
        layers=tuple(_blob(layer, f"manifest layer {i}") for i, layer in enumerate(layers)),
    )


def diff_ids(config: bytes, layer_count: int) -> tuple[str, ...]:
    """The config's `rootfs.diff_ids`; ManifestError unless one per layer."""
    try:
        data = json.loads(config)
        ids = data["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise ManifestError("image config has no rootfs.diff_ids") from None
    if not isinstance(ids, list) or len(ids) != layer_count:
        raise ManifestError(
            f"image config names {len(ids) if isinstance(ids, list) else 0} layers,"
            f" the manifest {layer_count}"
        )
    return tuple(check_digest(i, "image config diff_id") for i in ids)


def present_prefix(wanted: Sequence[str], local: Sequence[Sequence[str]]) -> int:
    """How many of `wanted`'s first layers the engine holds already.

    An engine's layer is its whole chain (a layer on top of its parents), so only a common
    prefix with a local image's layers counts, not a same layer on another base.
    """
    best = 0
    for layers in local:
        count = 0
        for mine, theirs in zip(wanted, layers, strict=False):
            if mine != theirs:
                break
            count += 1
        best = max(best, count)
    return best
