"""Demo credentials for a deployed federation: a TLS certificate authority and SuperNode keys.

Flower's secure deployment needs two kinds of material:

* **TLS** between SuperNodes (and ``flwr`` CLI) and the SuperLink: a CA certificate every
  client trusts, and a server certificate signed by it whose subject alternative names cover
  the address the SuperLink is reached at.
* **Node authentication** (``flower-superlink --enable-supernode-auth``): one elliptic-curve
  key pair per SuperNode, in OpenSSH format. The SuperNode signs its requests with the private
  key (``--auth-supernode-private-key``); the federation owner registers the public key
  (``flwr supernode register KEY.pub``). Unregistered keys are refused.

Everything here is for demos and tests on loopback: keys are written unencrypted with
owner-only permissions (0600, also when a file is replaced). Nothing existing is replaced
without ``force``: a new CA cuts off every institution that trusts the old one, and a new node
key is unknown to the SuperLink that registered the old one. Real institutions create their
keys on their own machines and send only the ``.pub`` file; never commit a private key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coopt_flwr.store.storage import atomic_write

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the TLS material of one SuperLink."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair (OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


class CredentialsExistError(FileExistsError):
    """Credentials are already there; replacing them needs ``force`` (``--force``)."""


def _refuse_existing(paths: Sequence[Path], what: str, force: bool) -> None:
    """Raise :class:`CredentialsExistError` naming the files that exist, unless ``force``."""
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CredentialsExistError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: {what}; "
            "pass --force (force=True) to replace them"
        )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temp file of mode ``mode`` and rename it over ``path``.

    ``os.open(..., mode)`` sets the mode of a new file only: an existing 0644 file opened with
    O_TRUNC keeps 0644. A fresh file renamed into place always has ``mode``, and replaces a
    symlink rather than writing through it.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), mode=mode)


def _write_private(path: Path, data: bytes) -> None:
    _write(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coopt-flwr demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh NIST P-384 private key."""
    return ec.generate_private_key(ec.SECP384R1())


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: dt.datetime, until: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate that signs end-entity certificates only (no intermediate CAs)."""
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(_name("coopt-flwr demo CA"))
        .issuer_name(_name("coopt-flwr demo CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    until: dt.datetime,
) -> x509.Certificate:
    """The SuperLink's certificate, signed by the CA, naming ``hosts`` as its SANs."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PEM (demo material: see the module docstring)."""
    pem, none = serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, pem, none)


def _write_tls(
    files: TlsFiles,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    server_cert: x509.Certificate,
    server_key: ec.EllipticCurvePrivateKey,
) -> None:
    """Certificates as plain files, private keys owner-only (mode 600)."""
    _write_public(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_public(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _pem_private(ca_key))
    _write_private(files.server_key, _pem_private(server_key))


def make_tls(
    out_dir: str | Path,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 30,
    force: bool = False,
) -> TlsFiles:
    """Create a CA and a SuperLink server certificate signed by it.

    Parameters
    ----------
    out_dir
        Folder to write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into.
    hosts
        IP addresses and DNS names the SuperLink is reached at (the certificate's SANs).
    days
        Validity of both certificates.
    force
        Replace those files when they exist (a new CA: every institution needs the new
        ``ca.crt``).

    Returns
    -------
    TlsFiles
        Where the files were written.

    Raises
    ------
    CredentialsExistError
        One of the four files exists and ``force`` is not set; nothing is written.
    """
    if not hosts:
        raise ValueError("make_tls: at least one host (IP or DNS name) is needed")
    out = Path(out_dir)
    planned = TlsFiles(out / CA_CERT, out / CA_KEY, out / SERVER_CERT, out / SERVER_KEY)
    _refuse_existing(
        [planned.ca_cert, planned.ca_key, planned.server_cert, planned.server_key],
        "a new CA would cut off every institution that trusts the old ca.crt",
        force,
    )
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key = _new_key()
    ca_cert = _ca_certificate(ca_key, now, until)
    server_key = _new_key()
    server_cert = _server_certificate(server_key, hosts, ca_cert, ca_key, now, until)
    _write_tls(planned, ca_cert, ca_key, server_cert, server_key)
    return planned


def make_node_key(out_dir: str | Path, name: str, force: bool = False) -> NodeKey:
    """Create one SuperNode's EC (NIST P-384) key pair in OpenSSH format.

    Writes ``<name>`` (private, mode 600) and ``<name>.pub`` into ``out_dir``.

    Raises
    ------
    CredentialsExistError
        Either file exists and ``force`` is not set; nothing is written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid node key name {name!r}")
    out = Path(out_dir)
    private = out / name
    public = out / f"{name}.pub"
    _refuse_existing(
        [private, public], "a new key is not the one the SuperLink registered for this node", force
    )
    key = _new_key()
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    _write_public(
        public,
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + f" {name}\n".encode(),
    )
    return NodeKey(name=name, private_key=private, public_key=public)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m coopt_flwr.store.credentials tls|node-key ...`` (see the README's deployment steps)."""
    import argparse

    parser = argparse.ArgumentParser(description="Demo credentials for a secure CoOpt federation.")
    sub = parser.add_subparsers(dest="action", required=True)
    tls = sub.add_parser("tls", help="the platform: a CA and the SuperLink's server certificate")
    tls.add_argument("--out", type=Path, default=Path("certs"))
    tls.add_argument("--host", action="append", help="address the SuperLink is reached at (repeat)")
    tls.add_argument("--days", type=int, default=30)
    tls.add_argument("--force", action="store_true", help="replace an existing CA and server certificate")
    key = sub.add_parser("node-key", help="an institution: its SuperNode's key pair")
    key.add_argument("--out", type=Path, default=Path("keys"))
    key.add_argument("--name", required=True)
    key.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    args = parser.parse_args(argv)
    try:
        if args.action == "tls":
            hosts = tuple(args.host or ("127.0.0.1", "localhost"))
            files = make_tls(args.out, hosts=hosts, days=args.days, force=args.force)
            print(f"CA certificate (give to every institution): {files.ca_cert}")
            print(
                "SuperLink certificate and key (keep on the platform): "
                f"{files.server_cert}, {files.server_key}"
            )
        else:
            node = make_node_key(args.out, args.name, force=args.force)
            print(f"private key (stays on this machine): {node.private_key}")
            print(f"public key (send to the platform to register): {node.public_key}")
    except (CredentialsExistError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
