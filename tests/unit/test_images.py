"""The image builder: deterministic, and different specs make different images."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from cua_dev import images
from cua_dev.images import (
    Healthcheck,
    ImageSpec,
    build_image,
    docker_archive,
    split_reference,
)

pytestmark = pytest.mark.unit


def _members(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _read(tar_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def _spec() -> ImageSpec:
    return ImageSpec(marker="v1", env={"A": "1"}, labels={"l": "x"}, size_mb=0.5)


def test_same_spec_gives_same_digests() -> None:
    first = build_image(_spec())
    images._base_layer.cache_clear()  # rebuild the base layer too, not just reuse it
    second = build_image(_spec())
    assert first.layers[0] is not second.layers[0]
    assert first.config_digest == second.config_digest
    assert first.manifest_digest == second.manifest_digest
    assert [layer.digest for layer in first.layers] == [layer.digest for layer in second.layers]


def test_v1_and_v2_differ_in_content_and_share_base_layer() -> None:
    v1, v2 = build_image(ImageSpec(marker="v1")), build_image(ImageSpec(marker="v2"))
    assert v1.image_id != v2.image_id
    assert v1.layers[0].digest == v2.layers[0].digest  # the cached busybox base
    assert v1.layers[1].digest != v2.layers[1].digest
    assert _read(v1.layers[1].tar, "marker") == b"v1"
    assert _read(v2.layers[1].tar, "marker") == b"v2"


def test_config_carries_the_spec() -> None:
    spec = ImageSpec(
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
        env={"K": "V"},
        labels={"app": "demo"},
        exposed_ports=["8080/tcp"],
        healthcheck=Healthcheck(("CMD", "true"), interval_s=2, timeout_s=1.5, retries=4),
        workdir="/app/data",
    )
    image = build_image(spec)
    config = json.loads(image.config)
    inner = config["config"]
    assert inner["Entrypoint"] == ["/bin/sh", "-c"]
    assert inner["Cmd"] == ["echo hi"]
    assert "K=V" in inner["Env"]
    assert inner["Labels"] == {"app": "demo"}
    assert inner["ExposedPorts"] == {"8080/tcp": {}}
    assert inner["WorkingDir"] == "/app/data"
    assert inner["Healthcheck"] == {
        "Test": ["CMD", "true"],
        "Interval": 2_000_000_000,
        "Timeout": 1_500_000_000,
        "Retries": 4,
        "StartPeriod": 0,
    }
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]
    assert "app/data" in _members(image.layers[1].tar)


def test_base_layer_has_busybox_and_applets() -> None:
    members = _members(build_image(ImageSpec()).layers[0].tar)
    assert members["bin/busybox"].isfile()
    for applet in ("sh", "sleep", "cat", "echo", "true", "false", "env", "ls"):
        assert members[f"bin/{applet}"].issym(), applet
    assert all(m.mtime == 0 and m.uid == 0 for m in members.values())


def test_padding_makes_an_image_of_about_the_size_asked() -> None:
    image = build_image(ImageSpec(marker="big", size_mb=5))
    unpacked = sum(len(layer.tar) for layer in image.layers)
    assert 4.95 * 1024 * 1024 < unpacked < 5.05 * 1024 * 1024
    padding = _read(image.layers[1].tar, "padding")
    assert len(image.layers[1].gz) > len(padding)  # incompressible


def test_docker_archive_lists_config_layers_and_tags() -> None:
    image = build_image(ImageSpec(marker="x"))
    archive = docker_archive(image, ["127.0.0.1:5000/a/b:1"])
    manifest = json.loads(_read(archive, "manifest.json"))
    assert manifest[0]["RepoTags"] == ["127.0.0.1:5000/a/b:1"]
    assert _read(archive, manifest[0]["Config"]) == image.config
    layer_tars = [_read(archive, name) for name in manifest[0]["Layers"]]
    assert layer_tars == [layer.tar for layer in image.layers]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("127.0.0.1:5000/eclipse/kuksa.val/databroker:0.3.0",
         ("127.0.0.1:5000", "eclipse/kuksa.val/databroker", "0.3.0")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app", "latest")),
    ],
)  # fmt: skip
def test_split_reference(reference: str, expected: tuple[str, str, str]) -> None:
    assert split_reference(reference) == expected
