"""The cluster's certificate authority: hook-free, used by the CLI and the panel.

Layout of ``STATE/pki/`` on every host: ``host.key`` + ``host.crt`` (this
host's certificate, for both its HTTPS server and its client calls) and
``ca.crt``; the manager also keeps ``ca.key``. Keys are written mode 0600.
ECDSA P-256: small keys, fast handshakes, supported by every TLS stack.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusterkit.definition.files import write_atomic

CA_DAYS = 3650
HOST_DAYS = 825


class PKIError(Exception):
    """The CA or a certificate is missing, invalid, or refused."""


@dataclass(frozen=True)
class Paths:
    """Where one host keeps its certificates (``state_dir/pki``)."""

    dir: str

    @classmethod
    def of(cls, state_dir: str) -> "Paths":
        return cls(os.path.join(state_dir, "pki"))

    @property
    def ca_key(self) -> str:
        return os.path.join(self.dir, "ca.key")

    @property
    def ca_cert(self) -> str:
        return os.path.join(self.dir, "ca.crt")

    @property
    def key(self) -> str:
        return os.path.join(self.dir, "host.key")

    @property
    def cert(self) -> str:
        return os.path.join(self.dir, "host.crt")

    def has_host_cert(self) -> bool:
        return all(os.path.exists(p) for p in (self.key, self.cert, self.ca_cert))


# ------------------------------------------------------------------ files


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a secret (0600 unless told) in a private directory, atomically."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomic(path, data, mode)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path_or_pem) -> x509.Certificate:
    data = path_or_pem if isinstance(path_or_pem, bytes) else open(path_or_pem, "rb").read()
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate: {exc}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: what a join token pins."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def expires(path: str) -> float | None:
    """When the certificate in ``path`` stops being valid (epoch), or ``None`` without one."""
    try:
        return load_cert(path).not_valid_after_utc.timestamp()
    except (OSError, PKIError):
        return None


def serial_hex(cert: x509.Certificate) -> str:
    """The serial as Python's ``getpeercert()`` spells it (upper-case hex)."""
    return format(cert.serial_number, "X")


# --------------------------------------------------------------------- CA


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def create_ca(state_dir: str, cluster_name: str, force: bool = False) -> x509.Certificate:
    """Create the cluster CA in the manager's ``state_dir/pki`` (refused if one exists)."""
    paths = Paths.of(state_dir)
    if os.path.exists(paths.ca_key) and not force:
        raise PKIError(f"a cluster CA already exists in {paths.dir} (--force replaces it, "
                       "and every host must join again)")
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clusterkit {cluster_name} CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_private(paths.ca_key, key_pem(key))
    write_private(paths.ca_cert, cert_pem(cert), 0o644)
    return cert


def load_ca(state_dir: str):
    """The manager's CA (key, certificate); :class:`PKIError` when there is none."""
    paths = Paths.of(state_dir)
    try:
        key = serialization.load_pem_private_key(open(paths.ca_key, "rb").read(), None)
    except FileNotFoundError:
        raise PKIError(f"no cluster CA in {paths.dir} (run `clusterkit panel init-ca`)") from None
    return key, load_cert(paths.ca_cert)


def make_csr(name: str, key=None):
    """A certificate request for host ``name``: (key, CSR PEM)."""
    key = key or new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM)


def sign_host(state_dir: str, csr_pem: bytes, name: str, ip: str) -> x509.Certificate:
    """Sign a host's CSR: CN and SAN are taken from the definition, never from the request."""
    ca_key, ca_cert = load_ca(state_dir)
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise PKIError("the certificate request's signature is invalid")
    if not isinstance(csr.public_key(), (ec.EllipticCurvePublicKey,)) and \
            getattr(csr.public_key(), "key_size", 0) < 2048:
        raise PKIError("the certificate request's key is too weak")
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                     *ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]))
            .issuer_name(ca_cert.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=HOST_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                        x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert


def issue_own(state_dir: str, name: str, ip: str) -> x509.Certificate:
    """The manager's own host certificate, signed by its CA, stored beside it."""
    key, csr = make_csr(name)
    cert = sign_host(state_dir, csr, name, ip)
    store_host_cert(state_dir, key_pem(key), cert_pem(cert), None)
    return cert


def init_cluster_ca(cluster, force: bool = False) -> x509.Certificate:
    """What ``clusterkit init`` and ``clusterkit panel init-ca`` do: the CA, the manager's
    certificate, and the record of that certificate (so the manager is recognised)."""
    manager = cluster.manager
    state = cluster.host_state_dir(manager.name)
    ca = create_ca(state, cluster.name, force=force)
    record_own(state, manager.name, issue_own(state, manager.name, manager.ip))
    return ca


def enroll_local(cluster, name: str) -> x509.Certificate:
    """Give node ``name`` its certificate directly from the manager's CA, without a token.

    Only for hosts that share the manager's machine and state dir (the demo,
    tests); a real node joins with ``clusterkit join`` and its key never
    leaves it.
    """
    host = cluster.host(name)
    manager_state = cluster.host_state_dir(cluster.manager.name)
    key, csr = make_csr(name)
    cert = sign_host(manager_state, csr, name, host.ip)
    store_host_cert(cluster.host_state_dir(name), key_pem(key), cert_pem(cert),
                    open(Paths.of(manager_state).ca_cert, "rb").read())
    record_own(manager_state, name, cert)
    return cert


def record_own(state_dir: str, name: str, cert: x509.Certificate) -> None:
    """Record a host's own new certificate as current; its older ones stop being valid."""
    from clusterkit_panel.store import Store

    store = Store(state_dir)
    try:
        store.add_cert(serial_hex(cert), name)
        store.revoke_others(name, serial_hex(cert))
    finally:
        store.close()


def store_host_cert(state_dir: str, key: bytes, cert: bytes, ca: bytes | None) -> Paths:
    """Keep a host's key (0600), certificate and the CA certificate."""
    paths = Paths.of(state_dir)
    write_private(paths.key, key)
    write_private(paths.cert, cert, 0o644)
    if ca is not None:
        write_private(paths.ca_cert, ca, 0o644)
    return paths


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


# --------------------------------------------------------------- contexts


def server_context(paths: Paths) -> ssl.SSLContext:
    """HTTPS for the panel: a client certificate is optional, but if sent it must be the CA's.

    Operators' browsers send none; the manager and nodes send theirs on the
    control endpoints, which refuse a request without one.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths.cert, paths.key)
    ctx.load_verify_locations(paths.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(paths: Paths) -> ssl.SSLContext:
    """Mutual TLS to another host of the cluster: our certificate, only the cluster CA trusted."""
    ctx = ssl.create_default_context(cafile=paths.ca_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths.cert, paths.key)
    return ctx


def peer_identity(peercert: dict | None) -> tuple[str, str] | None:
    """(common name, serial) from ``getpeercert()`` of a verified peer, or ``None``."""
    if not peercert:
        return None
    cn = next((value for rdn in peercert.get("subject", ()) for key, value in rdn
               if key == "commonName"), None)
    serial = peercert.get("serialNumber")
    return (cn, serial.upper().lstrip("0") or "0") if cn and serial else None
