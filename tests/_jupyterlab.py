"""Start and stop a real ``jupyter lab`` server for the tests (shared by the server and browser tests).

The server listens on a free loopback port with a random token and makes no network request at
start (no news feed, update check or PyPI extension manager). The port is chosen free just
before the server starts; if another process takes it in between, the server exits saying so
and :func:`start_lab` tries again on a fresh port.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 120.0  # about 5 s on an idle laptop; a busy CI machine can be far slower
START_ATTEMPTS = 3  # a fresh port each time, when another process took the chosen one first
PORT_TAKEN = ("already in use", "no available port")


class RunningLab(NamedTuple):
    url: str
    token: str
    process: subprocess.Popen
    log_path: Path

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-tail:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def lab_command(port: int, token: str, root: Path, notary_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # Jupyter refuses to start as root without this; harmless otherwise.
        "--ServerApp.allow_root=True",
        # No network at start: no news feed, no update check, no PyPI manager.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        # Opening a notebook writes a signing key and database; keep them in a temporary
        # directory, not in ~/.local/share/jupyter.
        f"--NotebookNotary.data_dir={notary_dir}",
        *extra,
    ]  # fmt: skip


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM (the server shuts its kernels down), then SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _answers(lab: RunningLab) -> str | None:
    """None once ``/api/status`` answers 200, else what went wrong (still starting)."""
    try:
        with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=2) as reply:
            return None if reply.status == 200 else f"HTTP {reply.status}"
    except OSError as error:  # connection refused while it starts
        return repr(error)


def start_lab(root: Path, tmp: Path, env: dict[str, str], extra: tuple[str, ...] = ()) -> RunningLab:
    """Start ``jupyter lab`` rooted at ``root`` (logs and the notary's data in ``tmp``) and wait
    until it answers; fail the test with the server's log if it does not."""
    token = secrets.token_hex(16)
    (tmp / "notary").mkdir(exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        log_path = tmp / f"jupyter-lab-{attempt}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                lab_command(port, token, root, tmp / "notary", extra),
                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        lab = RunningLab(f"http://{LOOPBACK}:{port}", token, process, log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = "no answer yet"
        while process.poll() is None and time.monotonic() < deadline:
            last = _answers(lab)
            if last is None:
                return lab
            time.sleep(0.2)
        stop(process)
        if any(m in lab.log() for m in PORT_TAKEN) and attempt < START_ATTEMPTS:
            continue
        pytest.fail(
            f"jupyter lab did not answer /api/status within {STARTUP_TIMEOUT_S:.0f} s or exited "
            f"(exit code {process.returncode}, last: {last}).\n--- server log ---\n{lab.log()}"
        )
    raise AssertionError("unreachable")
