"""A throwaway JupyterLab server on loopback for the browser test (see test_browser.py).

Everything it writes (config, settings, workspaces, runtime files, the served notebook copy)
lives in a temporary directory, so a test run neither reads nor changes the user's Jupyter set-up
or the repository's notebooks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from steerlab.figures import BROWSERS, INSTALL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "figures"


def find_chromium() -> Path | None:
    """``$STEERLAB_CHROMIUM``, else the browser ``.ci/chromium`` (``make test``'s and ``make run``'s
    first step) finds on PATH, by the names in :data:`steerlab.figures.BROWSERS`."""
    if os.environ.get("STEERLAB_CHROMIUM"):
        return Path(os.environ["STEERLAB_CHROMIUM"])
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    return Path(found) if found else None


CHROMIUM = find_chromium() or Path("/usr/bin/chromium")  # absent: the browser tests skip
NO_CHROMIUM = (f"no Chromium ({', '.join(BROWSERS)} on PATH, or $STEERLAB_CHROMIUM): `make test` "
               f"finds or installs it as `make run` does (.ci/chromium), or `{INSTALL}`")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-proxy-server",  # only loopback is reachable; never route it through a proxy
]

# No news feed, no update check, no extension search, no restored workspace: nothing leaves
# loopback.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
}
SERVER_CONFIG = {
    "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
               "extension_manager": "readonly"},
    "ServerApp": {"open_browser": False},
}

# the opener ignores *_proxy variables: the server is on loopback
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    root_dir: Path
    log_path: Path
    ready_seconds: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> object:
        req = urllib.request.Request(self.url(f"api/{path}"), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with _OPENER.open(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(no server log: {e})"
        return "\n".join(lines[-n:])


def _wait_ready(server: LabServer, timeout: float) -> float:
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.proc.returncode}:\n"
                               f"{server.log_tail()}")
        try:
            server.api("status", timeout=2.0)
            return time.monotonic() - t0
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = e
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer /api/status within {timeout:.0f} s "
                       f"(last error: {last}):\n{server.log_tail()}")


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _stop(server: LabServer) -> None:
    """Shut the server (and its kernels) down: ask politely, then SIGTERM, then SIGKILL.
    Only the processes this server started are signalled."""
    proc = server.proc
    children = _descendants(proc.pid)  # kernels run in their own sessions
    if proc.poll() is None:
        with contextlib.suppress(Exception):
            server.api("shutdown", method="POST", timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pid in children:  # a kernel the server failed to stop
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def jupyter_lab(tmp: Path, notebooks: list[str], env: dict[str, str] | None = None,
                ready_timeout: float = 90.0) -> Iterator[LabServer]:
    """Serve copies of ``notebooks`` (names in ``notebooks/``) from ``tmp/nb`` with a fresh
    JupyterLab on 127.0.0.1, a free port and a random token; stopped on exit."""
    root_dir = tmp / "nb"
    root_dir.mkdir(parents=True)
    for name in notebooks:
        shutil.copy2(NOTEBOOKS / name, root_dir / name)
    jhome = tmp / "jupyter"
    dirs = {name: jhome / name for name in ("config", "data", "runtime", "settings",
                                            "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))
    for rel, value in LAB_SETTINGS.items():
        path = dirs["settings"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    full_env = {**os.environ,
                "JUPYTER_CONFIG_DIR": str(dirs["config"]),
                "JUPYTER_DATA_DIR": str(dirs["data"]),
                "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
                "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
                "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
                "IPYTHONDIR": str(dirs["ipython"]),
                **(env or {})}
    full_env.pop("JUPYTER_TOKEN", None)
    port, token = free_port(), secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root_dir}", "--allow-root"]
    log_path = tmp / "jupyter-lab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(proc, port, token, root_dir, log_path)
    try:
        server.ready_seconds = _wait_ready(server, ready_timeout)
        yield server
    finally:
        _stop(server)
