"""HTTPS through the real server (``--tls-cert``/``--tls-key``): a test CA and a server
certificate are made here with the ``cryptography`` package; clients are Python's ``ssl``
(http.client and a raw socket) and ``curl --cacert``. Bad certificates and keys are one-line
start-up errors.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _server import ServerProcess, get, request, running_server, server_command

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def require_program(name: str, how: str) -> str:
    """The program's path; skip without it, or fail when WONDERQ_REQUIRE_ALL=1."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed; install it with: {how}"
    if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Pki:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server's certificate (SAN 127.0.0.1, localhost)
    key: Path  # its key
    other_key: Path  # a key of another certificate
    encrypted_key: Path  # the server's key under a passphrase


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    import ipaddress

    root = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("WonderQ test CA"))
        .issuer_name(_name("WonderQ test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        root / "ca.pem",
        root / "server.pem",
        root / "server.key",
        root / "other.key",
        root / "encrypted.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    pki.other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    pki.encrypted_key.write_bytes(_pem_key(key, b"passphrase"))
    return pki


def client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


@pytest.fixture(scope="module")
def https(pki: Pki):
    with running_server(
        "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), ssl_context=client_context(pki)
    ) as srv:
        yield srv


def test_listening_line_says_https(https: ServerProcess) -> None:
    assert https.scheme == "https"
    assert any(f"listening on https://127.0.0.1:{https.port}" in line for line in https.lines)


def test_python_ssl_round_trip(https: ServerProcess) -> None:
    resp = get(https, "/healthz")
    assert resp.status == 200 and resp.json() == {"status": "ok"}
    queue = f"tls-{os.getpid()}"
    assert request(https, "PUT", f"/v1/queues/{queue}", body="{}").status == 201
    resp = request(https, "POST", f"/v1/queues/{queue}/messages", body="über TLS")
    assert resp.status == 201
    msg_id = resp.json()["id"]
    resp = get(https, f"/v1/queues/{queue}/messages?cid=7")
    assert resp.json()["messages"] == [{"id": msg_id, "body": "über TLS", "receives": 1}]
    resp = request(https, "DELETE", f"/v1/queues/{queue}/messages/{msg_id}?cid=7")
    assert resp.json() is True


def test_keep_alive_and_pipelining_over_tls(https: ServerProcess, pki: Pki) -> None:
    ctx = client_context(pki)
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        request_bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        tls.sendall(request_bytes * 5)  # pipelined, on one connection
        data = b""
        while data.count(b'{"status":"ok"}') < 5:
            chunk = tls.recv(65536)
            assert chunk, data
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 5
        tls.sendall(request_bytes)  # the connection stays open
        more = tls.recv(65536)
        assert more.startswith(b"HTTP/1.1 200 OK\r\n")


def test_big_bodies_sent_interleaved_on_two_connections_arrive_intact(
    https: ServerProcess, pki: Pki
) -> None:
    """Every TLS read is decrypted into one buffer shared by all connections (wonderq/tls.py):
    bodies of many records, their pieces arriving in turn on two connections, stay apart."""
    ctx = client_context(pki)
    queues = [f"tls-big-{os.getpid()}-{i}" for i in range(2)]
    bodies = [b"".join(b"%07d%d" % (n, i) for n in range(112_500)) for i in range(2)]  # 900 kB
    for queue in queues:
        assert request(https, "PUT", f"/v1/queues/{queue}", body="{}").status == 201
    socks = []
    for queue, body in zip(queues, bodies, strict=True):
        raw = socket.create_connection(("127.0.0.1", https.port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"POST /v1/queues/%s/messages HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % (queue.encode(), len(body)))  # fmt: skip
        socks.append(tls)
    piece = 100_000
    for start in range(0, len(bodies[0]), piece):
        for tls, body in zip(socks, bodies, strict=True):
            tls.sendall(body[start : start + piece])
    for tls in socks:
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = tls.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 201 "), answer
        tls.close()
    for queue, body in zip(queues, bodies, strict=True):
        resp = get(https, f"/v1/queues/{queue}/messages?cid=7")
        assert resp.json()["messages"][0]["body"].encode() == body


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_old_tls_and_plain_http_are_refused(https: ServerProcess, pki: Pki) -> None:
    ctx = client_context(pki)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    # plain HTTP on the TLS port gets no HTTP answer
    with socket.create_connection(("127.0.0.1", https.port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := raw.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        assert b"200 OK" not in data
    # and the server is fine afterwards
    assert get(https, "/healthz").status == 200


def test_an_untrusted_certificate_is_refused_by_clients(https: ServerProcess) -> None:
    ctx = ssl.create_default_context()  # the system CAs, not ours
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_curl_with_cacert(https: ServerProcess, pki: Pki) -> None:
    curl = require_program("curl", "apt-get install -y curl")
    base = f"https://127.0.0.1:{https.port}"
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--cacert",
            str(pki.ca),
            "-X",
            "POST",
            "--data-binary",
            "via curl",
            f"{base}/v1/publish",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "id" in json.loads(out.stdout)
    # localhost is in the certificate too
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--cacert",
            str(pki.ca),
            "--resolve",
            f"localhost:{https.port}:127.0.0.1",
            f"https://localhost:{https.port}/healthz",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and json.loads(out.stdout) == {"status": "ok"}, out.stderr
    # without the CA, curl refuses the certificate
    out = subprocess.run(
        [curl, "-sS", "--capath", "/nonexistent", "--cacert", os.devnull, f"{base}/healthz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")}
    return subprocess.run(
        [*server_command(), "serve", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_bad_certificates_and_keys_are_one_line_start_up_errors(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    cases = [
        (
            (str(tmp_path / "missing.pem"), str(pki.key)),
            ("--tls-cert", "missing.pem", "cannot read"),
        ),
        (
            (str(pki.cert), str(tmp_path / "missing.key")),
            ("--tls-key", "missing.key", "cannot read"),
        ),
        ((str(pki.key), str(pki.key)), ("--tls-cert", "no PEM certificate")),
        ((str(pki.cert), str(pki.cert)), ("--tls-key", "no PEM private key")),
        ((str(garbage), str(pki.key)), ("--tls-cert", "garbage.pem", "not valid")),
        ((str(pki.cert), str(pki.other_key)), ("other.key", "is not the private key")),
        ((str(pki.cert), str(pki.encrypted_key)), ("encrypted.key", "encrypted")),
    ]
    for (cert, key), words in cases:
        one_line_error(run_serve("--tls-cert", cert, "--tls-key", key), 1, *words)
    one_line_error(run_serve("--tls-cert", str(pki.cert)), 2, "--tls-cert needs --tls-key")
    one_line_error(run_serve("--tls-key", str(pki.key)), 2, "--tls-key needs --tls-cert")


def test_tls_from_the_environment(pki: Pki) -> None:
    srv = ServerProcess(
        env={"WONDERQ_TLS_CERT": str(pki.cert), "WONDERQ_TLS_KEY": str(pki.key)},
        ssl_context=client_context(pki),
    )
    srv.start()
    try:
        assert srv.scheme == "https"
        assert get(srv, "/healthz").status == 200
    finally:
        srv.stop()


def test_protected_mode_gate_hands_over_a_tls_connection(pki: Pki) -> None:
    """The protected-mode gate swaps protocols under uvloop's TLS transport too."""
    with running_server(
        "--host",
        "0.0.0.0",
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        ssl_context=client_context(pki),
    ) as srv:
        assert any("protected mode" in line for line in srv.lines)
        for _ in range(3):
            assert get(srv, "/healthz").status == 200


# ---- clients that are not, or stop being, TLS clients ------------------------------------------


@pytest.fixture(scope="module")
def https_short(pki: Pki):
    """A server that holds a stalled handshake for 1 s (--header-timeout)."""
    with running_server(
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        "--header-timeout",
        "1",
        ssl_context=client_context(pki),
    ) as srv:
        yield srv


def client_hello(pki: Pki) -> bytes:
    """A real client's first flight: its ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection; socket.timeout if it does not
    close it within ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def close_wait(port: int) -> int:
    """The server's connections on ``port`` that the client closed and the server has not
    (state CLOSE_WAIT in /proc/net/tcp*)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            count += int(local.rsplit(":", 1)[1], 16) == port and state == "08"
    return count


def assert_healthy(srv: ServerProcess) -> None:
    """It still serves HTTPS, and nothing went wrong in its log."""
    assert get(srv, "/healthz").status == 200
    log = srv.output()
    assert "Traceback" not in log and " ERROR " not in log, log


@pytest.mark.parametrize(
    "garbage",
    [
        os.urandom(517),  # the size of a ClientHello
        b"\x16\x03\x01\xff\xff" + os.urandom(100),  # a handshake record longer than allowed
        b"\x16\x03\x01\x00\x05hello",  # a handshake record that is no handshake message
        b"\x00" * 4096,
        b"SSH-2.0-OpenSSH_9.6\r\n",  # another protocol on the wrong port
    ],
    ids=["random", "huge-record", "not-a-hello", "zeros", "ssh"],
)
def test_garbage_instead_of_a_client_hello_is_closed(
    https_short: ServerProcess, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", https_short.port), timeout=10) as raw:
        raw.sendall(garbage)
        data = until_closed(raw, 5)  # closed at once, well before the handshake timeout
    assert b"HTTP/1.1" not in data
    assert_healthy(https_short)


def test_clients_vanishing_mid_handshake_leave_nothing_behind(
    https: ServerProcess, pki: Pki
) -> None:
    hello = client_hello(pki)
    port = https.port
    for _ in range(10):
        # half the ClientHello, then gone
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(hello[: len(hello) // 2])
        # all of it, a look at the server's answer, then gone
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(hello)
            assert raw.recv(5)[:1] == b"\x16"  # the server's handshake record begins
        # all of it, then a reset instead of a close
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(hello)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.close()
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to see the server's half-closed connections in")
    # closed on the client's FIN, not by the 10 s handshake timeout
    deadline = time.monotonic() + 5
    while close_wait(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert close_wait(port) == 0
    assert_healthy(https)


def test_a_stalled_handshake_is_closed_after_the_header_timeout(
    https_short: ServerProcess, pki: Pki
) -> None:
    for first_flight in (b"", client_hello(pki)[:50]):
        with socket.create_connection(("127.0.0.1", https_short.port), timeout=10) as raw:
            raw.sendall(first_flight)
            started = time.monotonic()
            assert until_closed(raw, 8) == b""
            assert 0.5 <= time.monotonic() - started < 8
    assert_healthy(https_short)
