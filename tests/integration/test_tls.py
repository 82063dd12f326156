"""Optional TLS: `tributary up --tls-cert/--tls-key` serves REST over https and gRPC over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster import Cluster
from proto import deeplake_service_pb2 as pb
from proto import deeplake_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def self_signed(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_cluster_serves_rest_and_grpc_and_refuses_plain_http(tmp_path):
    cert, key = self_signed(tmp_path)
    cluster = Cluster(tmp_path / "data", nodes=1,
                      extra_args=["--tls-cert", cert, "--tls-key", key]).start()
    try:
        base = f"https://127.0.0.1:{cluster.http_port}/api/v1"
        trust = ssl.create_default_context(cafile=cert)
        assert httpx.get(f"{base}/health", verify=trust, timeout=30).status_code == 200
        r = httpx.post(f"{base}/datasets", verify=trust, timeout=30,
                       json={"name": "secure", "dimensions": 2})
        assert r.status_code == 201
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{cluster.http_port}/api/v1/health", timeout=5)
        with open(cert, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel(cluster.grpc_target, credentials) as channel:
            listed = pb_grpc.DatasetServiceStub(channel).ListDatasets(
                pb.ListDatasetsRequest(), timeout=30)
            assert [d.name for d in listed.datasets] == ["secure"]
        assert '"rest": ["https://' in cluster.output()
    finally:
        cluster.stop()
