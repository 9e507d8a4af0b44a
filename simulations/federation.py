"""A secure CoOpt federation on this machine: SuperLink + SuperNodes with TLS and node auth.

What institutions run on separate machines (see README, "Deploy across institutions"),
started here on loopback for demos, tests and timing:

    python -m simulations.federation credentials --dir fed --nodes 3      # CA, server cert, node keys
    python -m simulations.federation demo --dir fed --nodes 3             # start, run one round, stop
    python -m simulations.federation demo --dir fed --nodes 3 --proxy     # SuperNodes through Caddy

With ``--proxy`` (``Federation(proxy=True)``) the SuperNodes reach the SuperLink only through
Caddy (``coopt_flwr.store.proxy``: the Fleet API's paths, nothing else) on a public address of
its own, as in a real deployment; the platform's ``flwr`` CLI keeps the SuperLink's loopback port.

Every process is started in its own session and stopped by PID (its process group, so the
``flower-superexec`` children go too). Private keys are written with mode 600 into ``--dir``;
they are demo keys for loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flwr.protocol import messages as P
from coopt_flwr.store.credentials import make_node_key, make_tls
from coopt_flwr.store.proxy import ProxyConfig, caddy_command, write_caddyfile
from coopt_flwr.store.report import format_summary
from coopt_flwr.store.storage import CHECKPOINT_FILE, SUMMARY_FILE
from simulations.superlink import alive, send_signal

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FEDERATION = "coopt"  # the name of the SuperLink connection in $FLWR_HOME/config.toml


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):  # a list of prior entries: Flower's values are scalars
        return json.dumps(",".join(str(v) for v in value))
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def config_args(config: Mapping[str, Any]) -> str:
    """``key=value`` pairs as Flower's ``--run-config`` / ``--node-config`` parse them."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


@dataclass
class Node:
    """One institution's SuperNode: its name (and key), prior and own data."""

    name: str
    partition: int
    prior: str
    data: str = ""  # a data-set spec (local data mode); "" in platform data mode
    registered: bool = True  # False: its key is never registered (it must be refused)

    def node_config(self, num_partitions: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "partition-id": self.partition,
            "num-partitions": num_partitions,
            P.NODE_NAME: self.name,
            P.NODE_PRIOR: self.prior,
        }
        if self.data:
            cfg[P.NODE_DATA] = self.data
        return cfg


@dataclass
class Federation:
    """SuperLink and SuperNodes on loopback with TLS and CLI-managed node authentication.

    Parameters
    ----------
    workdir
        Holds ``certs/``, ``keys/``, ``flwr-home/``, ``logs/`` and the SuperLink database.
    nodes
        The SuperNodes to start.
    env
        Extra environment for every process.
    port
        The SuperLink's port on 127.0.0.1 (0: a free one).
    proxy
        Put Caddy in front (``coopt_flwr.store.proxy``): SuperNodes connect to
        ``public_host:public_port``, which forwards only the Fleet API to the SuperLink.
    public_host, public_port
        The proxy's address (another loopback address such as 127.0.0.2 plays a public one:
        the SuperLink's port is not bound there). ``public_port`` 0: a free one.
    """

    workdir: Path
    nodes: list[Node]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proxy: bool = False
    public_host: str = "127.0.0.1"
    public_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    stopped_pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        for sub in ("certs", "keys", "flwr-home", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.proxy:
            self.public_port = self.public_port or free_port(self.public_host)
        self._env = dict(os.environ)
        self._env.update(
            FLWR_HOME=str(self.workdir / "flwr-home"),
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            PYTHONUNBUFFERED="1",
        )
        self._env.update(self.env)

    # ------------------------------------------------------------------ set-up
    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    @property
    def keys(self) -> Path:
        return self.workdir / "keys"

    @property
    def superlink_address(self) -> str:
        """Where the SuperNodes connect: the proxy's public address, or the SuperLink's port."""
        return f"{self.public_host}:{self.public_port}" if self.proxy else f"127.0.0.1:{self.port}"

    def credentials(self) -> None:
        """TLS CA + server certificate for 127.0.0.1 (and the proxy's host), one key pair per node."""
        if not (self.certs / "ca.crt").is_file():
            hosts = ("127.0.0.1", "localhost")
            make_tls(self.certs, hosts=hosts if self.public_host in hosts else (*hosts, self.public_host))
        for node in self.nodes:
            if not (self.keys / node.name).is_file():
                make_node_key(self.keys, node.name)
        (self.workdir / "flwr-home" / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs / "ca.crt"}"\n'
        )

    def _spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "ab")  # the child holds it; closed here
        proc = subprocess.Popen(
            list(args),
            cwd=self.workdir,
            env={**self._env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_superlink(self, timeout: float = 120.0) -> None:
        """Start the SuperLink with TLS and node authentication; wait until it listens."""
        self._spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--host",
                "127.0.0.1",
                "--ssl-ca-certfile",
                str(self.certs / "ca.crt"),
                "--ssl-certfile",
                str(self.certs / "server.pem"),
                "--ssl-keyfile",
                str(self.certs / "server.key"),
                "--enable-supernode-auth",
                "--port",
                str(self.port),
                "--database",
                str(self.workdir / "superlink.db"),
                "--disable-runtime-dependency-installation",
            ],
        )
        self._wait_listening("superlink", "127.0.0.1", self.port, timeout)

    def start_proxy(self, timeout: float = 60.0) -> None:
        """Start Caddy on ``public_host:public_port`` in front of the SuperLink; wait until it listens."""
        config = ProxyConfig.from_certs(
            self.certs, f"{self.public_host}:{self.public_port}", f"127.0.0.1:{self.port}"
        )
        caddyfile = write_caddyfile(self.workdir / "proxy" / "Caddyfile", config)
        state = self.workdir / "proxy"  # Caddy's data and config folders, not the user's
        self._spawn(
            "proxy",
            caddy_command(caddyfile),
            env={"XDG_DATA_HOME": str(state / "data"), "XDG_CONFIG_HOME": str(state / "config")},
        )
        self._wait_listening("proxy", self.public_host, self.public_port, timeout)

    def _wait_listening(self, name: str, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early; see {self.workdir / 'logs' / f'{name}.log'}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"{name} did not listen on {host}:{port} within {timeout:.0f} s")

    def flwr(
        self, *args: str, timeout: float = 300.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this federation (``env`` overrides its environment)."""
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=ROOT,
            env={**self._env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def register(self, node: Node) -> int:
        """Register a node's public key (``flwr supernode register``); returns its node id."""
        proc = self.flwr("supernode", "register", str(self.keys / f"{node.name}.pub"), FEDERATION)
        match = re.search(r"SuperNode (\d+) registered", proc.stdout)
        if proc.returncode != 0 or not match:
            raise RuntimeError(f"registering {node.name} failed:\n{proc.stdout}\n{proc.stderr}")
        self.node_ids[node.name] = int(match.group(1))
        return self.node_ids[node.name]

    def start_supernode(self, node: Node) -> subprocess.Popen:
        """Start one SuperNode with TLS and its authentication key."""
        return self._spawn(
            node.name,
            [
                str(BIN / "flower-supernode"),
                "--root-certificates",
                str(self.certs / "ca.crt"),
                "--superlink",
                self.superlink_address,
                "--auth-supernode-private-key",
                str(self.keys / node.name),
                "--port",
                str(free_port()),
                "--max-retries",
                "3",
                "--node-config",
                config_args(node.node_config(len(self.nodes))),
            ],
        )

    def up(self) -> None:
        """Credentials, SuperLink (and proxy), registration of the registered nodes, every SuperNode."""
        self.credentials()
        self.start_superlink()
        if self.proxy:
            self.start_proxy()
        for node in self.nodes:
            if node.registered:
                self.register(node)
        for node in self.nodes:
            self.start_supernode(node)

    # ------------------------------------------------------------------ runs
    def submit(self, run_config: Mapping[str, Any]) -> subprocess.CompletedProcess:
        """``flwr run . coopt --run-config ...`` (returns once the run is submitted)."""
        proc = self.flwr("run", str(ROOT), FEDERATION, "--run-config", config_args(run_config))
        if proc.returncode != 0:
            raise RuntimeError(f"flwr run failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def wait_for_summary(self, output_dir: Path, rounds: int = 1, timeout: float = 600.0) -> dict[str, Any]:
        """Wait until ``output_dir`` holds the summary of round ``rounds`` and its last checkpoint."""
        deadline = time.monotonic() + timeout
        path = Path(output_dir) / SUMMARY_FILE
        while time.monotonic() < deadline:
            if path.is_file() and (Path(output_dir) / CHECKPOINT_FILE).is_file():
                try:
                    summary = json.loads(path.read_text())
                    ck = json.loads((Path(output_dir) / CHECKPOINT_FILE).read_text())
                except ValueError:
                    summary, ck = {}, {}
                if summary.get("rounds") and ck.get("round") == rounds and ck.get("phase") == "done":
                    return summary
            self._check_alive()
            time.sleep(0.5)
        raise TimeoutError(
            f"no summary of round {rounds} in {output_dir} within {timeout:.0f} s{self._tail()}"
        )

    def wait_for_phase(self, output_dir: Path, phase: str, timeout: float = 600.0) -> None:
        """Wait until the platform's checkpoint in ``output_dir`` records ``phase``."""
        deadline = time.monotonic() + timeout
        path = Path(output_dir) / CHECKPOINT_FILE
        while time.monotonic() < deadline:
            try:
                if json.loads(path.read_text()).get("phase") == phase:
                    return
            except (OSError, ValueError):
                pass
            self._check_alive()
            time.sleep(0.2)
        raise TimeoutError(
            f"the platform did not reach the {phase} phase within {timeout:.0f} s{self._tail()}"
        )

    def serverapp_pids(self) -> list[int]:
        """PIDs of this SuperLink's ServerApp processes (``flwr-serverapp`` below it)."""
        return [p for p in descendants(self.procs["superlink"].pid) if b"flwr-serverapp" in _cmdline(p)]

    def kill(self, name: str) -> None:
        """SIGKILL a process (a SuperNode, say) and everything it started, by PID."""
        proc = self.procs[name]
        for pid in [proc.pid, *descendants(proc.pid)]:
            send_signal(pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def _check_alive(self) -> None:
        link = self.procs.get("superlink")
        if link is not None and link.poll() is not None:
            raise RuntimeError(f"the SuperLink exited (code {link.returncode}){self._tail()}")

    def _tail(self, lines: int = 15) -> str:
        out = []
        for name in self.procs:
            path = self.workdir / "logs" / f"{name}.log"
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {name} ---\n" + "\n".join(text))
        return "".join(out)

    def log(self, name: str) -> str:
        """The output of one process so far."""
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    # ------------------------------------------------------------------ tear-down
    def down(self, grace: float = 10.0) -> list[int]:
        """Stop every process this federation started and their children, by PID.

        Flower's ``flower-superexec`` runs in a session of its own and its ``flwr-serverapp`` /
        ``flwr-clientapp`` children below it, so the whole tree of each process is collected
        first (children are re-parented once their parent dies), then sent SIGTERM, then
        SIGKILL after ``grace`` seconds.

        Returns
        -------
        list of int
            Every PID that was signalled (none of them is alive afterwards).
        """
        pids: list[int] = []
        for proc in self.procs.values():
            pids += [proc.pid, *descendants(proc.pid)]
        for pid in pids:
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            for proc in self.procs.values():
                proc.poll()  # reap our own children
            time.sleep(0.2)
        for pid in pids:
            send_signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.stopped_pids = pids
        return pids

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(Path(proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


# ---------------------------------------------------------------------------- demo data
def split_npz(source: str, parts: int, out_dir: Path, seed: int = 0) -> list[Path]:
    """Split a registered data set into ``parts`` npz files, one institution's data each."""
    from coopt_flwr.registry.datasets import create_dataset

    data = create_dataset(source)
    order = np.random.default_rng(seed).permutation(len(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ids in enumerate(np.array_split(order, parts)):
        path = out_dir / f"institution-{i}.npz"
        arrays = {"x": data.images[np.sort(ids)]}
        if data.labels is not None:
            arrays["y"] = data.labels[np.sort(ids)]
        np.savez(path, **arrays)
        paths.append(path)
    return paths


DEMO_PRIORS = ("efficientnet_lite0?size=32", "timm:resnet10t?size=16", "human", "weak:resnet10t?size=16")


def demo_nodes(workdir: Path, count: int, source: str = "digits") -> list[Node]:
    """``count`` institutions, each with its own slice of ``source`` and a different prior."""
    paths = split_npz(source, count, workdir / "data")
    return [
        Node(name=f"institution-{i}", partition=i, prior=DEMO_PRIORS[i % len(DEMO_PRIORS)], data=f"npz:{p}")
        for i, p in enumerate(paths)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["credentials", "demo"])
    parser.add_argument("--dir", type=Path, default=Path("federation"), help="work folder")
    parser.add_argument("--nodes", type=int, default=3, help="number of SuperNodes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--proxy", action="store_true", help="SuperNodes through Caddy (Fleet API only)")
    args = parser.parse_args(argv)
    nodes = demo_nodes(args.dir.resolve(), args.nodes)
    fed = Federation(args.dir, nodes, proxy=args.proxy)
    if args.action == "credentials":
        fed.credentials()
        print(f"wrote {fed.certs} (ca.crt, server.pem, server.key) and {fed.keys} (one key pair per node)")
        return
    out = fed.workdir / "run"
    with fed:
        start = time.perf_counter()
        fed.up()
        via = f", proxy at {fed.superlink_address}" if fed.proxy else ""
        print(f"[federation] SuperLink 127.0.0.1:{fed.port} (TLS, node auth){via}, {len(nodes)} SuperNodes")
        fed.submit(
            {
                "data-mode": "local",
                "num-rounds": args.rounds,
                "min-nodes": len(nodes),
                "output-dir": str(out),
                "step-timeout": 300.0,
            }
        )
        summary = fed.wait_for_summary(out, rounds=args.rounds)
        wall = time.perf_counter() - start
        print(f"[federation] {args.rounds} round(s) in {wall:.1f} s wall; output in {out}")
        print(format_summary(summary))


if __name__ == "__main__":
    main()
