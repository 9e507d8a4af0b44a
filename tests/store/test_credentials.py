"""Demo credentials: the server certificate chains to the CA and names the hosts; node keys are
the OpenSSH EC keys Flower's node authentication loads."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from coopt_flwr.store.credentials import CredentialsExistError, main, make_node_key, make_tls


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


def test_existing_ca_is_not_replaced_without_force(tmp_path):
    files = make_tls(tmp_path)
    before = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key)}
    with pytest.raises(CredentialsExistError, match=r"ca\.crt.*--force"):
        make_tls(tmp_path)
    assert {p: p.read_bytes() for p in before} == before  # nothing was written
    (tmp_path / "ca.crt").unlink()  # any one of the four is enough to refuse
    with pytest.raises(CredentialsExistError, match=r"ca\.key"):
        make_tls(tmp_path)
    again = make_tls(tmp_path, force=True)
    assert again.ca_key.read_bytes() != before[files.ca_key]


def test_existing_node_key_is_not_overwritten_without_force(tmp_path):
    node = make_node_key(tmp_path, "lab")
    private, public = node.private_key.read_bytes(), node.public_key.read_bytes()
    with pytest.raises(CredentialsExistError, match="--force"):
        make_node_key(tmp_path, "lab")
    assert (node.private_key.read_bytes(), node.public_key.read_bytes()) == (private, public)
    node.private_key.unlink()  # a lone .pub is registered somewhere: still refused
    with pytest.raises(CredentialsExistError, match=r"lab\.pub"):
        make_node_key(tmp_path, "lab")


def test_private_keys_are_0600_after_overwriting_a_0644_file(tmp_path):
    node = make_node_key(tmp_path / "keys", "lab")
    node.private_key.chmod(0o644)  # e.g. copied around with a permissive umask
    again = make_node_key(tmp_path / "keys", "lab", force=True)
    assert stat.S_IMODE(again.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(again.public_key.stat().st_mode) == 0o644
    files = make_tls(tmp_path / "certs")
    for key in (files.ca_key, files.server_key):
        key.chmod(0o644)
    files = make_tls(tmp_path / "certs", force=True)
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.ca_cert.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == [
        "ca.crt",
        "ca.key",
        "server.key",
        "server.pem",
    ]  # no temp files left


def test_command_line_refuses_in_one_line_and_replaces_with_force(tmp_path, capsys):
    certs = tmp_path / "certs"
    main(["tls", "--out", str(certs)])
    ca = (certs / "ca.crt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["tls", "--out", str(certs)])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "--force" in message and "\n" not in message
    assert (certs / "ca.crt").read_bytes() == ca
    main(["tls", "--out", str(certs), "--force"])
    assert (certs / "ca.crt").read_bytes() != ca
    main(["node-key", "--out", str(tmp_path), "--name", "lab"])
    with pytest.raises(SystemExit, match="--force"):
        main(["node-key", "--out", str(tmp_path), "--name", "lab"])
    main(["node-key", "--out", str(tmp_path), "--name", "lab", "--force"])
