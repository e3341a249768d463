"""The wheel holds only the agent: no service stack, image builder, TLS generator or demo
(those live in devtools/, development only)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules that start services or build images: they must never reach a device.
DEV_ONLY = ("stack", "images", "tlsgen", "unixhttp", "processes", "demo", "cua_dev")


@pytest.mark.unit
def test_wheel_holds_only_the_agent(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("container_update_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert "cua/cli.py" in modules
    assert "cua/testing/fake_engine.py" in modules
    leaked = [m for m in modules if any(Path(m).stem == d or d in m.split("/") for d in DEV_ONLY)]
    assert leaked == []
    assert all(m.startswith("cua/") for m in modules), modules
