"""`make install` / `make uninstall` into a staging root (DESTDIR), as README's "Run it on
your device" does on a real one: a fresh venv with the wheel, `cua` on the PATH, the systemd
unit pointing at it (checked by `systemd-analyze verify`), an example config that a second
install never overwrites, and the examples valid for the installed `cua`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cua import __version__

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/cua"


def make(target: str, destdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), target, f"DESTDIR={destdir}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    destdir = tmp_path_factory.mktemp("destdir")
    done = make("install", destdir)
    assert done.returncode == 0, done.stdout + done.stderr
    yield destdir
    shutil.rmtree(destdir, ignore_errors=True)


def installed_cua(staged: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(staged / PREFIX.lstrip("/") / "bin" / "cua"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=staged,  # not the source tree: the installed package must stand alone
    )


def test_install_puts_agent_unit_and_config_in_place(staged: Path) -> None:
    unit = (staged / "etc/systemd/system/cua.service").read_text()
    assert f"\nExecStart={PREFIX}/bin/cua run --config /etc/cua/config.json\n" in unit
    assert os.readlink(staged / "usr/local/bin/cua") == f"{PREFIX}/bin/cua"
    config = staged / "etc/cua/config.json"
    assert config.read_bytes() == (ROOT / "packaging/config.json").read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it will hold a broker password
    site = list((staged / PREFIX.lstrip("/")).glob("lib/python3*/site-packages"))
    assert len(site) == 1
    assert (site[0] / "cua" / "cli.py").is_file()
    assert not (site[0] / "cua_dev").exists()  # no test stack, image builder or demo


def test_installed_cua_runs_and_validates_the_examples(staged: Path) -> None:
    version = installed_cua(staged, "--version")
    assert (version.returncode, version.stdout) == (0, f"cua {__version__}\n")
    examples = sorted((ROOT / "examples").glob("*.json"))
    assert len(examples) >= 2
    for example in examples:
        done = installed_cua(
            staged, "validate", "--config", str(staged / "etc/cua/config.json"), str(example)
        )
        assert done.returncode == 0, (example, done.stdout, done.stderr)
        assert done.stdout.splitlines()[-1].startswith("valid: ")
        assert done.stderr == ""  # the example config has no unknown key


def test_systemd_accepts_the_installed_unit(staged: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): unit not verified")
    # The staged agent stands in for /opt/cua: verify checks that ExecStart is executable.
    unit = (staged / "etc/systemd/system/cua.service").read_text()
    check = tmp_path / "cua.service"
    check.write_text(unit.replace(f"ExecStart={PREFIX}/", f"ExecStart={staged}{PREFIX}/"))
    done = subprocess.run(
        [analyze, "verify", str(check)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_reinstall_keeps_the_config_and_uninstall_removes_the_rest(staged: Path) -> None:
    config = staged / "etc/cua/config.json"
    config.write_text(config.read_text().replace('"containers"', '"vehicle"', 1))
    edited = config.read_text()
    again = make("install", staged)
    assert again.returncode == 0, again.stderr
    assert "kept the existing /etc/cua/config.json" in again.stdout
    assert config.read_text() == edited

    gone = make("uninstall", staged)
    assert gone.returncode == 0, gone.stderr
    assert not (staged / "etc/systemd/system/cua.service").exists()
    assert not (staged / "usr/local/bin/cua").is_symlink()
    assert not (staged / PREFIX.lstrip("/")).exists()
    assert config.read_text() == edited  # changed by the operator: kept, and said so
    assert "kept /etc/cua/config.json" in gone.stdout
