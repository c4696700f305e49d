"""A throw-away PKI for DICOM TLS tests, made with the openssl command line tool.

A CA, a server certificate for 127.0.0.1/localhost and client certificates it signed,
and a second, unrelated CA with its own client (a peer we must not trust).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    ca: Path
    server: Pair
    client: Pair
    stranger_ca: Path
    stranger: Pair


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (apt-get install openssl)"
    subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", pair.key, "-out", pair.cert,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _issue(folder: Path, name: str, ca: Pair, extensions: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", pair.key, "-out", request,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key,
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext, "-out", pair.cert,
    )  # fmt: skip
    return pair


def make_pki(folder: Path) -> PKI:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "test-ca")
    server = _issue(
        folder,
        "server",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    client = _issue(folder, "client", ca, "extendedKeyUsage=clientAuth\n")
    stranger_ca = _ca(folder, "stranger-ca")
    stranger = _issue(folder, "stranger", stranger_ca, "extendedKeyUsage=clientAuth\n")
    return PKI(
        ca=ca.cert, server=server, client=client, stranger_ca=stranger_ca.cert, stranger=stranger
    )
