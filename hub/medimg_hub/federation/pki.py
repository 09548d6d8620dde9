"""Keys and certificates of the federation, made with ``cryptography`` (no openssl needed).

* A private CA and a SuperLink certificate for ``127.0.0.1`` / ``localhost`` (ECDSA P-384),
  for ``flower-superlink --ssl-*`` and the nodes' ``--root-certificates``.
* One EC P-384 key pair per SuperNode in OpenSSH format: Flower's node authentication reads
  the private key (``--auth-supernode-private-key``) and registers the public one
  (``flwr supernode register KEY.pub``).

Private keys are written with mode 0600. Existing files are reused, so restarting keeps
registered node keys valid. A real deployment uses the coordinating centre's CA and lets each
site generate its own key pair and send only the public key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from medimg_hub.secrets import write_private

VALID_DAYS = 365


@dataclass(frozen=True)
class ServerPki:
    """Paths of the CA certificate and the SuperLink's certificate and key (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's OpenSSH key pair."""

    private_key: Path
    public_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA384())


def make_server_pki(folder: Path) -> ServerPki:
    """A CA and a SuperLink certificate for loopback under ``folder`` (reused when present)."""
    found = ServerPki(folder / "ca.crt", folder / "superlink.crt", folder / "superlink.key")
    if all(p.exists() for p in (found.ca_cert, found.server_cert, found.server_key)):
        return found
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medimg federation CA")])
    ca_cert = _certificate("medimg federation CA", ca_key.public_key(), ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _certificate("127.0.0.1", server_key.public_key(), ca_name, ca_key, ca=False)
    folder.mkdir(parents=True, exist_ok=True)
    write_private(folder / "ca.key", _pem_key(ca_key))
    found.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_private(found.server_key, _pem_key(server_key))
    return found


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An EC P-384 OpenSSH key pair ``<name>`` / ``<name>.pub`` under ``folder`` (reused when present)."""
    found = NodeKey(folder / name, folder / f"{name}.pub")
    if found.private_key.exists() and found.public_key.exists():
        return found
    key = ec.generate_private_key(ec.SECP384R1())
    write_private(found.private_key, key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.OpenSSH,
                                                        serialization.NoEncryption()))
    found.public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH) + b"\n")
    return found


__all__ = ["ServerPki", "NodeKey", "make_server_pki", "make_node_key"]
