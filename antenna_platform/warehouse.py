"""Warehouse DDL, seed data and connections (PostgreSQL via psycopg 3).

All SQL is parameterized or composed with `psycopg.sql.Identifier`. Times are
stored as `timestamp` (without time zone) holding UTC; every connection sets
`TimeZone=UTC` so that aware datetimes convert correctly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from antenna_platform.config import READER_ROLE, ConfigError, Settings, redact_url

log = logging.getLogger(__name__)

SPEED_TYPES = ("antenna_total_bytes", "user_total_bytes", "app_total_bytes")
BATCH_TYPES = ("antenna_total_bytes", "email_total_bytes", "app_total_bytes")

# (id suffix, name, hourly quota in bytes), from the original exercise.
SEED_USERS: tuple[tuple[str, int], ...] = (
    ("andres", 200000),
    ("paco", 300000),
    ("juan", 100000),
    ("fede", 5000),
    ("gorka", 200000),
    ("luis", 200000),
    ("eric", 300000),
    ("carlos", 100000),
    ("david", 300000),
    ("juanchu", 300000),
    ("charo", 300000),
    ("delicidas", 1000000),
    ("milagros", 200000),
    ("antonio", 1000000),
    ("sergio", 1000000),
    ("maria", 1000000),
    ("cristina", 300000),
    ("lucia", 300000),
    ("carlota", 200000),
    ("emilio", 200000),
)


def device_id(n: int) -> str:
    """The exercise's device/user id for device number n (1-based)."""
    return f"00000000-0000-0000-0000-{n:012d}"


def seed_rows() -> list[tuple[str, str, str, int]]:
    return [
        (device_id(i), name, f"{name}@gmail.com", quota)
        for i, (name, quota) in enumerate(SEED_USERS, start=1)
    ]


DDL: tuple[str, ...] = (
    """
    create table if not exists user_metadata (
        id    text primary key,
        name  text not null,
        email text not null unique,
        quota bigint not null check (quota >= 0)
    )""",
    """
    create table if not exists bytes (
        "timestamp" timestamp not null,
        id          text not null,
        value       bigint not null,
        type        text not null check (type in
                    ('antenna_total_bytes', 'user_total_bytes', 'app_total_bytes')),
        primary key ("timestamp", id, type)
    )""",
    """
    create table if not exists bytes_hourly (
        "timestamp" timestamp not null,
        id          text not null,
        value       bigint not null,
        type        text not null check (type in
                    ('antenna_total_bytes', 'email_total_bytes', 'app_total_bytes')),
        primary key ("timestamp", id, type)
    )""",
    """
    create table if not exists user_quota_limit (
        email       text not null,
        usage       bigint not null,
        quota       bigint not null,
        "timestamp" timestamp not null,
        primary key ("timestamp", email)
    )""",
    # ---- bookkeeping of the speed layer (exactly-once state) ----
    """
    create table if not exists stream_offsets (
        consumer_group text not null,
        topic          text not null,
        partition      integer not null,
        next_offset    bigint not null,
        max_event_ts   timestamp,
        updated_at     timestamp not null default (now() at time zone 'utc'),
        primary key (consumer_group, topic, partition)
    )""",
    # Rejects, many to a row (`stream.dead_letters`): a run of one partition's rejects
    # received at one time, as arrays of offsets, payload lengths (-1: NULL) and reason ids
    # (into `reasons`) beside their payloads joined in one bytea; read them as the view
    # `dead_letter`, one row a reject. A row a reject cost PostgreSQL 0.6 to 1.1 us of
    # CPU, a run 0.2 us a reject (README, change 12). Stored uncompressed ("external"):
    # pglz on the arrays brought the cost back to 1.5 us a reject. No key and no index: a
    # reject is written once by the commit whose fence (claims and stored offsets, checked
    # in the same transaction) covers its offset, as every `bytes` delta is; per-hour
    # counts are in `lake_hours.rejects`.
    """
    create table if not exists dead_letter_batches (
        topic       text not null,
        partition   integer not null,
        received_at timestamp not null,
        offsets     bigint[] not null,
        lengths     integer[] not null,
        reason_ids  integer[] not null,
        reasons     text[] not null,
        payloads    bytea not null
    )""",
    *(
        f"alter table dead_letter_batches alter column {column} set storage external"
        for column in ("offsets", "lengths", "reason_ids", "reasons", "payloads")
    ),
    """
    create table if not exists lake_files (
        path            text primary key,
        hour            timestamp not null,
        kafka_partition integer,
        rows            bigint not null,
        bytes_sum       bigint not null,
        size_bytes      bigint not null,
        created_at      timestamp not null default (now() at time zone 'utc')
    )""",
    "create index if not exists lake_files_hour on lake_files (hour)",
    """
    create table if not exists lake_hours (
        hour         timestamp primary key,
        late_events  bigint not null default 0,
        unknown_ids  bigint not null default 0,
        updated_at   timestamp not null default (now() at time zone 'utc'),
        reported_at  timestamp
    )""",
    # The stream bumps `version` in every commit that changes an hour and reports the
    # hour while `version > reported_version` (a counter, not a clock: a commit that
    # waited on the reporter's row lock can never look older than the report).
    "alter table lake_hours add column if not exists rejects bigint not null default 0",
    "alter table lake_hours add column if not exists version bigint not null default 0",
    "alter table lake_hours add column if not exists reported_version bigint not null default 0",
    "create index if not exists lake_files_partition_hour on lake_files (kafka_partition, hour)",
    # the broker's id of the topic the offsets belong to: a recreated topic (e.g. an
    # in-memory broker restarted) has a new id and its offsets start again at 0
    "alter table stream_offsets add column if not exists topic_id text",
    # Who may write for a partition: each claim has a strictly increasing owner epoch,
    # tied to the consumer-group generation that assigned it (see stream/ownership.py).
    """
    create table if not exists partition_claims (
        consumer_group text not null,
        topic          text not null,
        partition      integer not null,
        epoch          bigint not null,
        generation     integer not null,
        owner          text not null,
        released       boolean not null default false,
        claimed_at     timestamp not null default (now() at time zone 'utc'),
        renewed_at     timestamp not null default (now() at time zone 'utc'),
        primary key (consumer_group, topic, partition)
    )""",
)


class DatabaseUnreachable(ConfigError):
    """The platform database did not accept a connection (down, or a bad URL)."""


def connect(
    settings: Settings,
    *,
    autocommit: bool = False,
    session: dict[str, str] | None = None,
    connect_timeout: int = 10,
) -> psycopg.Connection:
    """Open a connection to the platform database, with a one-line error if it fails.

    `session`: server settings for this session (e.g. `statement_timeout`), names and
    values from the code, never from input."""
    options = "-c TimeZone=UTC" + "".join(
        f" -c {k}={v}" for k, v in sorted((session or {}).items())
    )
    try:
        return psycopg.connect(
            settings.database_url,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            options=options,
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        hint = " (is it running? try `antenna up`)" if settings.embedded_postgres else ""
        raise DatabaseUnreachable(
            f"ANTENNA_DATABASE_URL: cannot connect to {redact_url(settings.database_url)}"
            f"{hint}: {reason}"
        ) from None


@contextmanager
def transaction(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection whose work commits on success and rolls back on any error."""
    conn = connect(settings)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()


def create_tables(conn: psycopg.Connection) -> None:
    """Run the DDL statements the database does not reflect yet.

    Why skip the others: `create index if not exists` and `alter table ... if [not]
    exists` lock their table before they look (ShareLock, AccessExclusiveLock), so on a
    current schema they would still queue behind the stream's commits, block the next
    ones, and deadlock with a commit that holds one table and wants another (measured:
    `provision` in a loop beside a running stream failed 1 to 2 times in 300 and failed
    stream commits). The catalog checks take no table locks.
    """
    # An advisory lock keeps concurrent provisioners from racing on `create if not exists`.
    conn.execute("select pg_advisory_xact_lock(771001)")
    for stmt in DDL:
        if not ddl_applied(conn, stmt):
            conn.execute(stmt)
    _dead_letter_view(conn)


# One row a reject, from `dead_letter_batches`: a reject's payload starts where the
# lengths before it in its row end.
_DEAD_LETTER_VIEW = """
    create view dead_letter as
    select b.topic, b.partition, r."offset",
           case when r.length < 0 then null
                else substring(b.payloads from r.start::integer + 1 for r.length) end
               as payload,
           b.reasons[r.reason_id + 1] as reason,
           b.received_at
    from dead_letter_batches b
    cross join lateral (
        select u."offset", u.length, u.reason_id,
               coalesce(sum(greatest(u.length, 0)) over (order by u.i rows between
                        unbounded preceding and 1 preceding), 0) as start
        from unnest(b.offsets, b.lengths, b.reason_ids)
             with ordinality as u("offset", length, reason_id, i)
    ) r"""

# A database from before change 12 has `dead_letter` as a table, one row a reject: its
# rows move into runs of one.
_MOVE_DEAD_LETTER_ROWS = """
    insert into dead_letter_batches
        (topic, partition, received_at, offsets, lengths, reason_ids, reasons, payloads)
    select topic, partition, received_at, array["offset"],
           array[coalesce(length(payload), -1)], array[0], array[reason],
           coalesce(payload, ''::bytea)
    from dead_letter"""


def _dead_letter_view(conn: psycopg.Connection) -> None:
    """Create the view `dead_letter` unless it is there (a catalog check: no lock), moving
    the rows of an older `dead_letter` table into `dead_letter_batches` first."""
    kind = conn.execute(
        "select relkind from pg_class where oid = to_regclass('dead_letter')"
    ).fetchone()
    if kind is not None and kind[0] == "v":
        return
    if kind is not None:
        # first the lock the drop takes anyway: a commit of an older stream still writing
        # into the table finishes before the rows move (its rows move too) or fails after
        conn.execute("lock table dead_letter in access exclusive mode")
        moved = conn.execute(_MOVE_DEAD_LETTER_ROWS).rowcount
        conn.execute("drop table dead_letter")
        log.info("dead_letter: %d rows of the old table moved to dead_letter_batches", moved)
    conn.execute(_DEAD_LETTER_VIEW)


# The forms of `DDL`'s statements, and the catalog query (no table locks) that says
# whether one is already applied: when the query returns the given value.
_CATALOG_CHECKS: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (
        re.compile(r"create (?:table|index) if not exists (\w+)", re.I),
        "select to_regclass(%s) is not null",
        True,
    ),
    (
        re.compile(r"alter table (\w+) add column if not exists (\w+)", re.I),
        "select exists (select 1 from pg_attribute where attrelid = to_regclass(%s) "
        "and attname = %s and not attisdropped)",
        True,
    ),
    (
        re.compile(r"alter table (\w+) alter column (\w+) set storage external", re.I),
        "select exists (select 1 from pg_attribute where attrelid = to_regclass(%s) "
        "and attname = %s and attstorage = 'e')",
        True,
    ),
)


def catalog_check(stmt: str) -> tuple[str, tuple[str, ...], bool] | None:
    """(query, its parameters, the answer that means applied) for a statement of one of
    `DDL`'s forms; None for another form."""
    text = " ".join(stmt.split())
    for pattern, query, applied in _CATALOG_CHECKS:
        if m := pattern.match(text):
            return query, m.groups(), applied
    return None


def ddl_applied(conn: psycopg.Connection, stmt: str) -> bool:
    """Whether the catalog already shows what `stmt` would do (False for a statement of
    another form than `DDL`'s: it runs)."""
    check = catalog_check(stmt)
    if check is None:
        return False
    query, params, applied = check
    return conn.execute(query, params).fetchone()[0] is applied


def seed_users(conn: psycopg.Connection) -> int:
    """Insert the exercise's users that are missing; never overwrite an operator's edit."""
    inserted = 0
    with conn.cursor() as cur:
        for row in seed_rows():
            cur.execute(
                "insert into user_metadata (id, name, email, quota) values (%s, %s, %s, %s) "
                "on conflict do nothing",
                row,
            )
            inserted += cur.rowcount
    return inserted


SERVING_SCHEMA = "serving"


def ensure_reader_role(conn: psycopg.Connection, role: str, password: str, database: str) -> None:
    """A login role that can only SELECT schema `serving` (what the dashboards read).

    It gets CONNECT on the database, USAGE on `serving`, SELECT on its views and, through
    default privileges of the role running this (the one dbt runs as), on every view dbt
    creates there later. Nothing on `public` or any other schema, no writes.
    """
    ident = sql.Identifier(role)
    schema = sql.Identifier(SERVING_SCHEMA)
    found = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    if not found:
        try:
            with conn.transaction():  # a savepoint: another database's provisioner may race us
                conn.execute(
                    sql.SQL(
                        "create role {} login nosuperuser nocreatedb nocreaterole noinherit"
                    ).format(ident)
                )
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            found = True
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("alter role {} with login password {}").format(ident, sql.Literal(password))
            )
    except psycopg.errors.InsufficientPrivilege:
        if not found:
            raise
        # created by an administrator, who set its password (= ANTENNA_READER_PASSWORD)
    conn.execute(sql.SQL("create schema if not exists {}").format(schema))
    conn.execute(
        sql.SQL("grant connect on database {} to {}").format(sql.Identifier(database), ident)
    )
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, ident))
    conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(schema, ident))
    conn.execute(
        sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(
            schema, ident
        )
    )


def database_name(settings: Settings) -> str:
    return unquote(urlsplit(settings.database_url).path.lstrip("/"))


def provision(settings: Settings) -> dict[str, int]:
    """Create every table idempotently and seed `user_metadata`. Returns counts.

    With dashboards on (the default), also the read-only role Superset connects as.
    """
    with transaction(settings) as conn:
        create_tables(conn)
        inserted = seed_users(conn)
        users = conn.execute("select count(*) from user_metadata").fetchone()[0]
        if settings.dashboard:
            from antenna_platform.dashboards.credentials import reader_password  # noqa: PLC0415

            try:
                ensure_reader_role(
                    conn, READER_ROLE, reader_password(settings), database_name(settings)
                )
            except psycopg.errors.InsufficientPrivilege:
                raise ConfigError(
                    f"ANTENNA_DATABASE_URL: {redact_url(settings.database_url)} may not create "
                    f"or alter role {READER_ROLE!r} for the dashboards (needs CREATEROLE); "
                    "create it as in docs/serving.md, or set ANTENNA_DASHBOARD=0"
                ) from None
    return {"seeded": inserted, "users": users}


def load_user_metadata(settings: Settings) -> dict[str, tuple[str, str, int]]:
    """id -> (name, email, quota), as the operators have left it."""
    with connect(settings) as conn:
        rows = conn.execute("select id, name, email, quota from user_metadata").fetchall()
    return {r[0]: (r[1], r[2], int(r[3])) for r in rows}
