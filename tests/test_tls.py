"""TLS in transit: private Redis and memcached TLS servers with a throwaway CA, client certificates.

Each test module run makes its own CA, server and client certificates (with
the ``cryptography`` package) and starts its own servers on free ports, so the
shared test servers are never touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import cachekit as ck
from cachekit.backends.memcached import MemcachedBackend
from cachekit.backends.redis import RedisBackend
from cachekit.encryption import EncryptedSerializer
from tests.faultkit import free_port, wait_for_port

NOW = datetime.datetime.now(datetime.timezone.utc)
# TLS handshakes on a busy test machine: a generous deadline, the checks are not about speed
TIMEOUT = 5.0


# ---------------------------------------------------------------- a throwaway PKI


@dataclass
class Issued:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path)


class CA:
    """A certificate authority that signs server and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.issued = _write(directory, name, self.cert, self.key)

    def issue(self, stem: str, *, server: bool, names: Sequence[str] = ()) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _write(self.dir, stem, builder.sign(self.key, hashes.SHA256()), key)


@dataclass
class PKI:
    ca: Path
    server: Issued  # for 127.0.0.1 and localhost
    wrong_host: Issued  # valid, from the same CA, for another host name only
    client: Issued
    rogue_client: Issued  # a client certificate from a CA the servers do not trust
    rogue_ca: Path


@pytest.fixture(scope="module")
def pki() -> Iterator[PKI]:
    directory = Path(tempfile.mkdtemp(prefix="ck-tls-"))
    try:
        ca, rogue = CA(directory, "cachekit-test-ca"), CA(directory, "rogue-ca")
        yield PKI(
            ca=ca.issued.cert,
            server=ca.issue("server", server=True, names=["127.0.0.1", "localhost"]),
            wrong_host=ca.issue("wrong-host", server=True, names=["cache.other.example"]),
            client=ca.issue("client", server=False),
            rogue_client=rogue.issue("rogue-client", server=False),
            rogue_ca=rogue.issued.cert,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- private TLS servers


class TLSServer:
    """A private redis-server or memcached speaking only TLS on a free port."""

    def __init__(self, kind: str, cert: Issued, ca: Path) -> None:
        self.kind, self.port = kind, free_port()
        self._dir = tempfile.mkdtemp(prefix=f"ck-tls-{kind}-")
        if kind == "redis":
            cmd = [
                "redis-server",
                "--port", "0",
                "--tls-port", str(self.port),
                "--bind", "127.0.0.1",
                "--tls-cert-file", str(cert.cert),
                "--tls-key-file", str(cert.key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "yes",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
            ]  # fmt: skip
        else:
            options = f"ssl_chain_cert={cert.cert},ssl_key={cert.key},ssl_ca_cert={ca}"
            cmd = ["memcached", "-Z", "-o", options + ",ssl_verify_mode=2"]
            cmd += ["-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "16"]
            if os.geteuid() == 0:
                cmd += ["-u", "root"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"{kind} TLS server did not start: {err.decode()[-500:]}") from None

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_tls(pki: PKI) -> Iterator[TLSServer]:
    server = TLSServer("redis", pki.server, pki.ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_tls_wrong_host(pki: PKI) -> Iterator[TLSServer]:
    server = TLSServer("redis", pki.wrong_host, pki.ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def memcached_tls(pki: PKI) -> Iterator[TLSServer]:
    server = TLSServer("memcached", pki.server, pki.ca)
    yield server
    server.close()


@pytest.fixture(scope="module")
def memcached_tls_wrong_host(pki: PKI) -> Iterator[TLSServer]:
    server = TLSServer("memcached", pki.wrong_host, pki.ca)
    yield server
    server.close()


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _refused_for_tls(exc: BaseException) -> bool:
    """Whether a TLS failure caused ``exc`` (verification, or the server ending the handshake)."""
    return any(isinstance(e, ssl.SSLError) for e in _chain(exc))


# ---------------------------------------------------------------- Redis


def _rediss(port: int, pki: PKI, *, ca: Path | None = None, client: Issued | None = None,
            check_hostname: bool = True, host: str = "127.0.0.1") -> str:  # fmt: skip
    query = [
        f"ssl_check_hostname={'true' if check_hostname else 'false'}",
        "ssl_cert_reqs=required",
    ]
    if ca is not None:
        query.append("ssl_ca_certs=" + quote(str(ca)))
    if client is not None:
        query += [
            "ssl_certfile=" + quote(str(client.cert)),
            "ssl_keyfile=" + quote(str(client.key)),
        ]
    query.append(f"socket_timeout={TIMEOUT}")
    return f"rediss://{host}:{port}/0?" + "&".join(query)


def test_redis_tls_with_ca_client_certificate_and_hostname_check(
    redis_tls: TLSServer, pki: PKI, namespace: str
) -> None:
    url = _rediss(redis_tls.port, pki, ca=pki.ca, client=pki.client)
    cache = ck.Cache.from_url(url, namespace=namespace, ttl=60)
    try:
        cache.set("k", {"over": "tls"})
        assert cache.get("k") == {"over": "tls"}
        assert cache.stats().errors == 0
        conn = cache.backend.connection_pool.get_connection()  # type: ignore[attr-defined]
        try:
            sock = getattr(conn._sock, "_sock", conn._sock)  # under the deadline wrapper
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            cache.backend.connection_pool.release(conn)  # type: ignore[attr-defined]
    finally:
        cache.close()


def test_redis_tls_by_host_name(redis_tls: TLSServer, pki: PKI) -> None:
    backend = RedisBackend.from_url(
        _rediss(redis_tls.port, pki, ca=pki.ca, client=pki.client, host="localhost")
    )
    try:
        backend.set("ck-tls:k", b"v", 10)
        assert backend.get("ck-tls:k") == b"v"
    finally:
        backend.close()


@pytest.mark.parametrize(
    "case",
    ["wrong-host-name", "untrusted-server-ca", "no-client-certificate", "client-from-rogue-ca",
     "plain-text-client"],
)  # fmt: skip
def test_redis_tls_refuses(
    case: str, redis_tls: TLSServer, redis_tls_wrong_host: TLSServer, pki: PKI
) -> None:
    if case == "wrong-host-name":
        url = _rediss(redis_tls_wrong_host.port, pki, ca=pki.ca, client=pki.client)
    elif case == "untrusted-server-ca":
        url = _rediss(redis_tls.port, pki, ca=pki.rogue_ca, client=pki.client)
    elif case == "no-client-certificate":
        url = _rediss(redis_tls.port, pki, ca=pki.ca)
    elif case == "client-from-rogue-ca":
        url = _rediss(redis_tls.port, pki, ca=pki.ca, client=pki.rogue_client)
    else:
        url = f"redis://127.0.0.1:{redis_tls.port}/0?socket_timeout={TIMEOUT}"
    backend = RedisBackend.from_url(url)
    try:
        with pytest.raises(ck.BackendUnavailableError) as info:
            backend.set("ck-tls:k", b"v", 10)
            backend.get("ck-tls:k")
        if case != "plain-text-client":  # that one is dropped by the server: reset or EOF
            assert _refused_for_tls(info.value), _chain(info.value)
        if case == "wrong-host-name":
            assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(info.value))
            assert "127.0.0.1" in str(info.value) or "hostname" in str(info.value).lower()
    finally:
        backend.close()


def test_redis_wrong_host_is_accepted_only_without_the_check(
    redis_tls_wrong_host: TLSServer, pki: PKI
) -> None:
    # the control for the refusal above: the same server and files, only the name check off
    url = _rediss(
        redis_tls_wrong_host.port, pki, ca=pki.ca, client=pki.client, check_hostname=False
    )
    backend = RedisBackend.from_url(url)
    try:
        backend.set("ck-tls:k", b"v", 10)
        assert backend.get("ck-tls:k") == b"v"
    finally:
        backend.close()


def test_a_cache_over_a_refused_tls_server_falls_open(
    redis_tls_wrong_host: TLSServer, pki: PKI, namespace: str
) -> None:
    url = _rediss(redis_tls_wrong_host.port, pki, ca=pki.ca, client=pki.client)
    cache = ck.Cache.from_url(url, namespace=namespace, ttl=60)
    try:
        assert cache.get("k", "default") == "default"
        assert cache.get_or_load("k", lambda: "loaded") == "loaded"
        assert cache.stats().errors >= 1
    finally:
        cache.close()


# ---------------------------------------------------------------- memcached


def _context(pki: PKI, *, ca: Path | None, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def test_memcached_tls_with_ca_client_certificate_and_hostname_check(
    memcached_tls: TLSServer, pki: PKI, namespace: str
) -> None:
    context = _context(pki, ca=pki.ca, client=pki.client)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    backend = MemcachedBackend.from_url(
        f"memcached://127.0.0.1:{memcached_tls.port}", tls_context=context, timeout=TIMEOUT
    )
    cache = ck.Cache(backend, namespace=namespace, ttl=60)
    try:
        cache.set("k", {"over": "tls"})
        assert cache.get("k") == {"over": "tls"}
        assert cache.stats().errors == 0
    finally:
        cache.close()


def test_memcached_tls_flag_verifies_against_the_system_store(memcached_tls: TLSServer) -> None:
    # ?tls=true alone: the default context, which does not trust a private CA
    backend = MemcachedBackend.from_url(
        f"memcached://127.0.0.1:{memcached_tls.port}?tls=true&timeout={TIMEOUT}"
    )
    try:
        with pytest.raises(ck.BackendUnavailableError) as info:
            backend.set("ck-tls:k", b"v", 10)
        assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(info.value))
    finally:
        backend.close()


@pytest.mark.parametrize(
    "case", ["wrong-host-name", "untrusted-server-ca", "no-client-certificate",
             "client-from-rogue-ca"],
)  # fmt: skip
def test_memcached_tls_refuses(
    case: str, memcached_tls: TLSServer, memcached_tls_wrong_host: TLSServer, pki: PKI
) -> None:
    port = memcached_tls_wrong_host.port if case == "wrong-host-name" else memcached_tls.port
    ca = pki.rogue_ca if case == "untrusted-server-ca" else pki.ca
    client = {"no-client-certificate": None, "client-from-rogue-ca": pki.rogue_client}.get(
        case, pki.client
    )
    backend = MemcachedBackend.from_url(
        f"memcached://127.0.0.1:{port}",
        tls_context=_context(pki, ca=ca, client=client),
        timeout=TIMEOUT,
    )
    try:
        with pytest.raises(ck.BackendUnavailableError) as info:
            backend.set("ck-tls:k", b"v", 10)
            backend.get("ck-tls:k")
        assert _refused_for_tls(info.value), _chain(info.value)
        if case == "wrong-host-name":
            assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(info.value))
    finally:
        backend.close()


# ---------------------------------------------------------------- the production setup

#: The ACL rules docs/security.md recommends for an application's Redis user.
APP_RULES = ["resetchannels", "-@all", "+get", "+set", "+mget", "+del", "+exists", "+evalsha",
             "+script|load", "+ping"]  # fmt: skip


def test_redis_acl_user_over_tls_limited_to_its_namespace(
    redis_tls: TLSServer, pki: PKI, namespace: str
) -> None:
    import redis

    admin = redis.Redis(
        host="127.0.0.1",
        port=redis_tls.port,
        ssl=True,
        ssl_ca_certs=str(pki.ca),
        ssl_certfile=str(pki.client.cert),
        ssl_keyfile=str(pki.client.key),
    )
    prefix = f"ck:{len(namespace)}:{namespace}:"
    admin.execute_command(
        "ACL", "SETUSER", "app", "reset", "on", ">app-secret-7Hq2", f"~{prefix}*", *APP_RULES
    )
    base = _rediss(redis_tls.port, pki, ca=pki.ca, client=pki.client)
    url = base.replace("rediss://", "rediss://app:app-secret-7Hq2@")
    secret = EncryptedSerializer.generate_key()
    serializer = EncryptedSerializer(ck.JsonSerializer(), keys=[secret])
    cache = ck.Cache.from_url(url, namespace=namespace, ttl=60, serializer=serializer)
    other = ck.Cache.from_url(url, namespace=namespace + "-other", ttl=60, serializer=serializer)
    try:
        # every operation of the cache works with only these commands and keys
        cache.set("a", {"n": 1})
        cache.set_many({"b": 2, "c": 3})
        assert cache.get("a") == {"n": 1}
        assert cache.get_many(["a", "b", "x"]) == {"a": {"n": 1}, "b": 2}
        assert cache.get_or_load("d", lambda: 4) == 4  # lease + compare-and-set (Lua)
        assert cache.delete("a") is True
        assert "b" in cache
        for key in "bcd":  # the values at rest are ciphertext
            assert admin.get(cache.full_key(key))[:1] == b"e"

        @cache.writes(key="user:{user_id}")
        def save(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        save(7)
        cache.clear()
        assert cache.get("b") is None
        assert cache.stats().errors == 0, cache.stats().errors_by_operation
        # another namespace on the same server is out of this user's reach
        for _ in range(10):
            other.set("k", 1)
            assert other.get("k") is None
        assert other.stats().errors >= 10
        assert not other.breaker.open_until  # a refusal is not an outage
        # a wrong password is an outage
        wrong = RedisBackend.from_url(url.replace("app-secret-7Hq2", "wrong-password"))
        with pytest.raises(ck.BackendUnavailableError) as info:
            wrong.get(prefix + "k")
        assert "wrong-password" not in str(info.value)
        wrong.close()
        # and so are the dangerous commands
        app = redis.Redis.from_url(
            url.split("?")[0] + "?ssl_cert_reqs=required", **_tls_kwargs(pki)
        )
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("GET", "other")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                app.execute_command(*command)
        app.close()
    finally:
        admin.execute_command("ACL", "DELUSER", "app")
        admin.close()
        cache.close()
        other.close()


def _tls_kwargs(pki: PKI) -> dict[str, str]:
    return {
        "ssl_ca_certs": str(pki.ca),
        "ssl_certfile": str(pki.client.cert),
        "ssl_keyfile": str(pki.client.key),
    }
