"""Find and stop the detached local SuperLink that ``flwr run`` starts (it outlives the run).

python -m simulations.superlink status     # PIDs of local SuperLinks of $FLWR_HOME
python -m simulations.superlink stop       # stop them (SIGTERM, then SIGKILL)
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path


def flwr_home() -> Path:
    """Flower's state folder: ``$FLWR_HOME`` or ``~/.flwr``."""
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")).expanduser().resolve()


def local_superlink_pids(home: Path | None = None) -> list[int]:
    """PIDs of ``flower-superlink`` processes whose state database lives under ``home``."""
    home = (home or flwr_home()).resolve()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        if any(a.endswith("flower-superlink") for a in text) and any(str(home) in a for a in text):
            pids.append(int(proc.name))
    return sorted(pids)


def stop_local_superlink(home: Path | None = None, grace: float = 5.0) -> list[int]:
    """Stop the local SuperLinks of ``home``; returns the PIDs that were signalled."""
    pids = local_superlink_pids(home)
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            send_signal(pid, signal.SIGKILL)
    return pids


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``; a process that is gone already (or not ours) is left alone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # after "(comm)", which may hold spaces


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["status", "stop"])
    args = parser.parse_args()
    if args.action == "status":
        pids = local_superlink_pids()
        print(f"local SuperLinks of {flwr_home()}: {pids or 'none'}")
    else:
        pids = stop_local_superlink()
        print(f"stopped {pids or 'nothing'}")


if __name__ == "__main__":
    main()
