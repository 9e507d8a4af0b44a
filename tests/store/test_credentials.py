"""Demo credentials: the server certificate chains to the CA and names the hosts; node keys are
the OpenSSH EC keys Flower's node authentication loads."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from coopt_flwr.store.credentials import main, make_node_key, make_tls


def test_server_certificate_is_signed_by_the_ca_and_covers_the_hosts(tmp_path):
    files = make_tls(tmp_path, hosts=("127.0.0.1", "superlink.example.org"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer do not match
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        make_tls(tmp_path / "none", hosts=())


def test_node_key_is_an_openssh_nist_ec_pair(tmp_path):
    node = make_node_key(tmp_path, "hospital-a")
    private = load_ssh_private_key(node.private_key.read_bytes(), None)
    public = load_ssh_public_key(node.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert private.public_key().public_numbers() == public.public_numbers()
    assert stat.S_IMODE(node.private_key.stat().st_mode) == 0o600
    assert make_node_key(tmp_path, "hospital-b").public_key.read_bytes() != node.public_key.read_bytes()
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            make_node_key(tmp_path, bad)


def test_command_line_writes_both_kinds(tmp_path, capsys):
    main(["tls", "--out", str(tmp_path / "certs"), "--host", "10.0.0.5"])
    main(["node-key", "--out", str(tmp_path / "keys"), "--name", "lab-b"])
    assert (tmp_path / "certs" / "ca.crt").is_file() and (tmp_path / "keys" / "lab-b.pub").is_file()
    assert "send to the platform" in capsys.readouterr().out
