"""Test/demo credentials for a local deployment: a CA, a SuperLink TLS certificate, SuperNode key pairs.

``python -m potara.flower.certs DIR --nodes 3`` writes ``ca.crt``, ``server.pem``, ``server.key`` (TLS for
127.0.0.1/localhost) and ``node_<i>`` / ``node_<i>.pub`` (P-384, OpenSSH format) for SuperNode authentication.
For production, issue certificates from your own CA and keep private keys on their machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..reporting.outputs import atomic_write


def make_credentials(
    out: Path, nodes: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> Path:
    """Write the CA, the SuperLink certificate for ``hosts`` and ``nodes`` SuperNode key pairs to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "potara-local-ca")])
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server = _certificate(
        server_name, ca_name, server_key.public_key(), ca_key, is_ca=False, hosts=hosts
    )
    atomic_write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    atomic_write(out / "server.pem", server.public_bytes(serialization.Encoding.PEM))
    atomic_write(out / "server.key", _private_pem(server_key))
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        atomic_write(
            out / f"node_{i}",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
        atomic_write(
            out / f"node_{i}.pub",
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ),
        )
    return out


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m potara.flower.certs DIR --nodes N``."""
    parser = argparse.ArgumentParser(
        prog="python -m potara.flower.certs", description=__doc__
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    print(make_credentials(args.out, args.nodes))


if __name__ == "__main__":
    main()
