"""Generate a throwaway CA, server and client certificate with the `openssl` CLI.

The broker's TLS listener needs real certificates; the `openssl` binary is in every Debian
and avoids a Python crypto dependency. Keys are EC P-256: fast to generate (start time).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PkiFiles", "generate_tls"]

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:reg.test
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Paths of the PEM files of the test PKI."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _issue(directory: Path, name: str, cn: str, conf: Path, ca: tuple[Path, Path]) -> None:
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".crt"))
    _openssl("req", "-new", "-config", conf, "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
             "-set_serial", str(secrets.randbits(63)), "-days", "3650",
             "-extfile", conf, "-extensions", name, "-out", cert)  # fmt: skip
    csr.unlink()


def generate_tls(directory: Path) -> PkiFiles:
    """Create `ca.crt`, `server.{crt,key}` (SAN IP:127.0.0.1, DNS:localhost, DNS:reg.test:
    the unit tests' HTTPS registry) and `client.{crt,key}` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"
    conf.write_text(_CONFIG)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", "-config", conf, "-extensions", "ca", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
             "-keyout", ca_key, "-out", ca_cert, "-subj", "/CN=cua test CA")  # fmt: skip
    _issue(directory, "server", "localhost", conf, (ca_cert, ca_key))
    _issue(directory, "client", "cua-test-client", conf, (ca_cert, ca_key))
    return PkiFiles(
        ca_cert=ca_cert,
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
