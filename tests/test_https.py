"""HTTPS served directly with a configured certificate, and `public_url` driving every URL the server hands out."""
from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mediaserver.config import ConfigError, load_config
from mediaserver.server import banner, lan_address, tls_context
from tests.server_fixture import ADMIN_TOKEN, run_server, small_config

cryptography = pytest.importorskip("cryptography")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def get_json(url: str, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def test_https_with_a_configured_certificate(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    config = small_config(tmp_path / "data")
    config.server.tls_cert, config.server.tls_key, config.server.https_port = str(cert), str(key), 0
    config.server.rtmps_port = 0
    config.server.public_url = "https://stream.example.org"
    handle = run_server(config)
    try:
        port = handle.server.https_port
        assert port and port != handle.server.http_port
        stream = handle.create_stream()
        trusted = ssl.create_default_context(cafile=str(cert))
        status, view = get_json(f"https://127.0.0.1:{port}/api/streams/{stream['id']}", trusted)
        assert status == 200 and view["id"] == stream["id"]
        with urllib.request.urlopen(f"https://localhost:{port}/watch/{stream['id']}", timeout=10, context=trusted) as page:
            assert page.status == 200
        # Every URL handed out starts with public_url, whichever listener answered.
        assert view["playback_url"] == f"https://stream.example.org/hls/{stream['id']}/master.m3u8"
        assert view["watch_url"] == f"https://stream.example.org/watch/{stream['id']}"
        assert view["rtmp_url"] == f"rtmp://stream.example.org:{handle.rtmp_port}/live"
        assert stream["playback_url"] == view["playback_url"]
        token = handle.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {})[1]
        assert token["playback_url"].startswith(f"https://stream.example.org/hls/{stream['id']}/master.m3u8?token=")
        # A client that doesn't trust the certificate is refused; plain HTTP still answers on its own port.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=10)
        assert get_json(f"{handle.http}/api/streams/{stream['id']}")[0] == 200
        text = banner(config, handle.server)
        assert "https://stream.example.org/" in text and f"rtmp://stream.example.org:{handle.rtmp_port}/live" in text
        assert socket.gethostname() not in text.replace("stream.example.org", "")
    finally:
        handle.stop()


def test_public_host_still_works_as_a_deprecated_alias(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.server.public_host = "church.local"
    handle = run_server(config)
    try:
        stream = handle.create_stream()
        port = handle.server.http_port
        assert stream["playback_url"] == f"http://church.local:{port}/hls/{stream['id']}/master.m3u8"
        assert stream["rtmp_url"] == f"rtmp://church.local:{handle.rtmp_port}/live"
        assert f"http://church.local:{port}/" in banner(config, handle.server)
    finally:
        handle.stop()


def test_without_public_url_the_banner_names_a_reachable_address(tmp_path: Path) -> None:
    handle = run_server(small_config(tmp_path / "data"))
    try:
        text = banner(handle.server.config, handle.server)
        address = lan_address()  # the machine's address on its network, which other machines can reach
        assert f"  Watch & admin: http://{address}:{handle.server.http_port}/" in text
        assert "public_url" in text  # tells the operator how to fix the name
    finally:
        handle.stop()


def test_tls_and_public_url_settings(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\npublic_url = "https://stream.mychurch.org/"\ntls_cert = "{cert}"\n'
                    f'tls_key = "{key}"\nhttps_port = 443\n')
    config = load_config(path)
    assert config.server.base_url() == "https://stream.mychurch.org"
    assert config.server.public_hostname() == "stream.mychurch.org" and config.server.https_port == 443
    for bad, message in ((f'tls_cert = "{cert}"', "together"), ('public_url = "stream.mychurch.org"', "public_url")):
        path.write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    # Certificate files are read when the server starts (the CLI's other commands don't need to read them).
    config.server.tls_cert, config.server.tls_key = str(tmp_path / "nope.pem"), str(key)
    with pytest.raises(ConfigError, match="nope.pem"):
        tls_context(config)
    config.server.tls_cert = str(cert)
    assert tls_context(config) is not None
