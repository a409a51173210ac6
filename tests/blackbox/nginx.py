"""A real nginx in front of floodway nodes, for the black-box tests (test_rolling.py).

`Nginx` runs its own nginx master process (with one worker) as a child of the test: the
configuration, pid file, logs and temporary folders all live in a folder of the test,
nginx listens on a free 127.0.0.1 port, and nothing of the system's nginx (service,
/etc/nginx, /var/log/nginx) is used or touched.

The proxy configuration is the example operators get, deploy/nginx/floodway.conf, with
only its node addresses, listen address and access-log path replaced (`render_site`);
a small main file written here includes it, as /etc/nginx/nginx.conf includes conf.d/.
That main file also has a second server on another port that answers the configuration's
generation number, so that `reload()` can tell when the new configuration serves.

The binary is $FLOODWAY_TEST_NGINX, else /usr/sbin/nginx, else nginx on PATH
(scripts/test installs Debian's nginx package when none is found).

Every wait is bounded; the whole process group is killed at `stop()`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from harness import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "deploy" / "nginx" / "floodway.conf"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 10.0


class NginxError(RuntimeError):
    """nginx could not be found, configured, started or reloaded."""


def find_nginx() -> Path | None:
    """The nginx binary to run, or None when there is none."""
    env = os.environ.get("FLOODWAY_TEST_NGINX")
    if env:
        return Path(env)
    if os.access("/usr/sbin/nginx", os.X_OK):
        return Path("/usr/sbin/nginx")
    found = shutil.which("nginx")
    return Path(found) if found else None


def _replace_once(pattern: str, replacement: str, text: str, what: str) -> str:
    out, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise NginxError(f"{EXAMPLE_CONFIG}: expected one {what}, found {count}")
    return out


def render_site(
    example: str, upstream_ports: Sequence[int], listen_port: int, access_log: Path
) -> str:
    """deploy/nginx/floodway.conf with the test's node ports, listen port and log path.

    The node lines keep the example's parameters (max_fails, fail_timeout); everything
    else is the example's text unchanged.
    """
    if not upstream_ports:
        raise NginxError("nginx needs at least one upstream node")
    block = re.search(r"^upstream floodway \{.*?^\}", example, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise NginxError(f"{EXAMPLE_CONFIG}: no `upstream floodway {{ ... }}` block")
    server_line = re.compile(r"^([ \t]*)server[ \t]+\S+(.*);[ \t]*$", flags=re.MULTILINE)
    lines = list(server_line.finditer(block.group(0)))
    if not lines:
        raise NginxError(f"{EXAMPLE_CONFIG}: no `server` line in the upstream block")
    indent, params = lines[0].group(1), lines[0].group(2)
    servers = "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)
    # The example's node lines are replaced, as a whole, by the test's node lines.
    upstream = block.group(0)
    upstream = upstream[: lines[0].start()] + servers + upstream[lines[-1].end() :]
    text = example[: block.start()] + upstream + example[block.end() :]
    text = _replace_once(
        r"^[ \t]*listen[ \t]+80;", f"    listen 127.0.0.1:{listen_port};", text, "`listen 80;`"
    )
    text = _replace_once(
        r"^[ \t]*access_log[ \t]+\S+[ \t]+floodway;",
        f"    access_log {access_log} floodway;",
        text,
        "`access_log ... floodway;`",
    )
    return text


class Nginx:
    """One nginx master process (foreground, `daemon off`) proxying to floodway nodes."""

    def __init__(
        self, root: Path, upstream_ports: Sequence[int], binary: Path | None = None
    ) -> None:
        found = binary or find_nginx()
        if found is None:
            raise NginxError(
                "nginx not found: install Debian's nginx package (scripts/test does) or set "
                "FLOODWAY_TEST_NGINX to an nginx binary"
            )
        self.binary = found
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.root / "temp" / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.control_port = free_port()
        self.conf = self.root / "nginx.conf"
        self.site = self.root / "floodway.conf"
        self.pid_file = self.root / "nginx.pid"
        self.error_log = self.root / "logs" / "error.log"
        self.access_log = self.root / "logs" / "access.log"
        self.stderr_path = self.root / "logs" / "stderr.log"
        self.generation = 0
        self.upstream_ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(upstream_ports)

    # -- configuration ---------------------------------------------------------------

    def write_config(self, upstream_ports: Sequence[int]) -> None:
        """Write the main file and the site file for these nodes (a new generation)."""
        self.generation += 1
        self.upstream_ports = list(upstream_ports)
        example = EXAMPLE_CONFIG.read_text()
        self.site.write_text(render_site(example, self.upstream_ports, self.port, self.access_log))
        temp = self.root / "temp"
        # As root, nginx would run its worker as `nobody`, which cannot enter the test's
        # private temporary folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"""{user}worker_processes 1;
master_process on;
pid {self.pid_file};
error_log {self.error_log} info;

events {{
    worker_connections 1024;
}}

http {{
    access_log {self.access_log};
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    include {self.site};

    # The test's own control server: which configuration generation is serving.
    server {{
        listen 127.0.0.1:{self.control_port};
        access_log off;
        location = /generation {{
            return 200 "{self.generation}";
        }}
    }}
}}
"""
        )

    def check_config(self) -> None:
        result = subprocess.run(
            self._argv() + ["-t"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
        )
        if result.returncode != 0:
            raise NginxError(f"nginx -t failed ({result.returncode}):\n{result.stderr}")

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            "-p", str(self.root),
            "-c", str(self.conf),
            "-e", str(self.error_log),
            "-g", "daemon off;",
        ]  # fmt: skip

    # -- process ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Nginx:
        assert self.proc is None or self.proc.poll() is not None, "nginx already running"
        self.check_config()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self.root,
                start_new_session=True,  # its own process group: stop() kills the workers too
            )
        self._wait_generation(self.generation, timeout)
        return self

    def reload(self, upstream_ports: Sequence[int], timeout: float = RELOAD_TIMEOUT) -> None:
        """Point nginx at other nodes: rewrite the config, SIGHUP the master, wait for it."""
        assert self.running(), "nginx is not running"
        self.write_config(upstream_ports)
        self.check_config()
        pid = int(self.pid_file.read_text().strip())
        assert self.proc is not None and pid == self.proc.pid, (pid, self.proc)
        os.kill(pid, signal.SIGHUP)
        self._wait_generation(self.generation, timeout)

    def _wait_generation(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        for _ in range(int(timeout / 0.02) + 1):
            if self.proc is not None and self.proc.poll() is not None:
                raise NginxError(f"nginx exited with {self.proc.returncode}\n{self.log()}")
            try:
                resp = requests.get(f"http://127.0.0.1:{self.control_port}/generation", timeout=1.0)
                if resp.status_code == 200 and resp.text == str(generation):
                    return
                last = f"{resp.status_code} {resp.text[:100]}"
            except requests.RequestException as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        raise NginxError(
            f"nginx did not serve configuration {generation} within {timeout}s ({last})\n"
            + self.log()
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fast shutdown (SIGTERM), bounded; then SIGKILL the process group if needed.

        On SIGTERM the master waits for its workers before it exits, so a master that
        exited 0 leaves nothing behind; otherwise its group (it leads its own session)
        is killed.
        """
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.returncode != 0:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- helpers ---------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def access_lines(self) -> list[str]:
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()

    def log(self, tail: int = 6000) -> str:
        parts = []
        for label, path in (("error.log", self.error_log), ("stderr", self.stderr_path)):
            if path.exists():
                text = path.read_text(errors="replace")
                parts.append(f"--- nginx {label} ---\n{text[-tail:]}")
        return "\n".join(parts)


def example_fail_timeout() -> float:
    """The `fail_timeout` of the example's node lines, in seconds."""
    match = re.search(r"fail_timeout=(\d+)(ms|s)\b", EXAMPLE_CONFIG.read_text())
    if match is None:
        return 10.0  # nginx's default
    value = int(match.group(1))
    return value / 1000 if match.group(2) == "ms" else float(value)
