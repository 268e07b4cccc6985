"""HTTPS in front of an emulator: the same routes, faults, latency and records, over TLS on loopback.

Microsoft Entra's sign-in endpoints are https only, and MSAL refuses any other authority ("should consist of an
https url", msal/authority.py ``canonicalize``), so the sign-in part of the Entra emulator answers on a second,
TLS port as well. The certificate is made here: a throw-away certificate authority (one per process) signs a
certificate for ``127.0.0.1`` and ``localhost``. Clients trust it through a CA bundle file, which is certifi's
bundle plus that authority (``REQUESTS_CA_BUNDLE`` for requests-based code such as the function host,
``verify=`` for a requests Session); nothing on the machine is changed.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from localdev.emulators.base import Emulator, LoopbackServer

HANDSHAKE_SECONDS = 30


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files: the authority (``ca_file``), the server's certificate and key, and a bundle to trust."""

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    bundle_file: Path


_files: CertificateFiles | None = None
_files_lock = threading.Lock()


def certificate_files() -> CertificateFiles:
    """The process's loopback certificate (made on first use, removed when the process ends)."""
    global _files
    with _files_lock:
        if _files is None:
            _files = _make_files()
        return _files


def _make_files() -> CertificateFiles:
    import certifi
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sentinel-playbooks loopback CA (local only)")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    directory = Path(tempfile.mkdtemp(prefix="loopback-tls-"))
    weakref.finalize(certificate_files, shutil.rmtree, directory, True)  # removed at interpreter exit
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = CertificateFiles(directory, directory / "ca.pem", directory / "server.pem", directory / "server.key",
                             directory / "bundle.pem")
    files.ca_file.write_bytes(ca_pem)
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    files.key_file.chmod(0o600)
    files.bundle_file.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca_pem)
    return files


class TlsFront:
    """An https listener whose requests go through the emulator's own dispatch (routes, faults, records)."""

    def __init__(self, emulator, host: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self.files = certificate_files()
        self._host, self._port = host, 0
        self._server: LoopbackServer | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server, "the TLS front is not started"
        host, port = self._server.server_address[:2]
        return f"https://{host}:{port}"

    def start(self) -> TlsFront:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.files.cert_file, self.files.key_file)
        front, emulator = self, self.emulator

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                # The handshake runs in this connection's thread, so a silent client never holds up the others.
                self.request.settimeout(HANDSHAKE_SECONDS)
                self.request.do_handshake()
                self.request.settimeout(None)
                super().setup()
                with front._lock:
                    front._connections.add(self.connection)

            def finish(self) -> None:
                with front._lock:
                    front._connections.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                try:
                    emulator._dispatch(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        class Server(LoopbackServer):
            def get_request(self):
                sock, address = self.socket.accept()
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

            def handle_error(self, request, client_address) -> None:
                pass  # a client that refuses the certificate, or goes away mid-handshake

        self._server = Server((self._host, self._port), Handler)
        self._port = self._server.server_address[1]  # the same port again after ``offline()``
        threading.Thread(target=self._server.serve_forever, name=f"{emulator.name}-tls", daemon=True).start()
        return self

    # The emulator's own shutdown (same attributes): the listening socket, then the kept-alive connections.
    stop = Emulator.stop


__all__ = ["CertificateFiles", "TlsFront", "certificate_files"]
