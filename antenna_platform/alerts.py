"""Alerts: one message when an incident opens, one when it clears, never a storm.

An incident is a key (`stream_lag`, `stream:w0`, `batch:<first hour>...<last hour>`, ...)
whose state lives in Postgres (`alert_incidents`): `fire` sends only when it opens the
key (new, or resolved before), `clear` only when it resolves an open one, so a failure
seen by several sensors, or on every tick, is announced once. Every alert goes to the
log; with `ANTENNA_ALERT_WEBHOOK_URL` set it is also POSTed as Slack-compatible JSON
(`{"text": ...}`) with a timeout. The URL is a credential (a Slack webhook's path is its
secret): it is never logged, and delivery errors are reported by kind only.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from antenna_platform.config import Settings
from antenna_platform.warehouse import connect

log = logging.getLogger("antenna.alerts")

INCIDENTS_DDL = """
create table if not exists alert_incidents (
    key         text primary key,
    summary     text not null,
    opened_at   timestamp not null default (now() at time zone 'utc'),
    resolved_at timestamp
)"""
DDL_LOCK = 771001  # the provisioning lock (warehouse.create_tables)
WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    key: str
    state: str  # "firing" or "resolved"
    title: str
    text: str

    def message(self) -> str:
        mark = ":rotating_light:" if self.state == "firing" else ":white_check_mark:"
        return f"{mark} [antenna {self.state}] {self.title}\n{self.text}".strip()


@dataclass(frozen=True)
class Incident:
    key: str
    summary: str
    opened_at: datetime  # naive UTC


def slack_payload(alert: Alert) -> dict[str, object]:
    """A body Slack's incoming webhooks accept (and most chat tools imitate)."""
    return {
        "text": alert.message(),
        "antenna": {"key": alert.key, "state": alert.state, "title": alert.title},
    }


def post_webhook(url: str, payload: dict[str, object], timeout_s: float = WEBHOOK_TIMEOUT_S) -> str:
    """POST JSON; returns "delivered" or why not, without the URL."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by load_settings
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return "delivered" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:  # refused, timeout, DNS
        reason = getattr(exc, "reason", exc)
        return f"not delivered ({type(reason).__name__})"


def deliver(
    alert: Alert, webhook_url: str | None, echo: Callable[[str], None] | None = None
) -> str:
    """Log the alert (and echo it, e.g. to a Dagster log), then POST it if a URL is set."""
    text = alert.message()
    (log.warning if alert.state == "firing" else log.info)("%s", text)
    outcome = post_webhook(webhook_url, slack_payload(alert)) if webhook_url else "log only"
    line = f"alert {alert.key} {alert.state}: {outcome}"
    log.info("%s", line)
    if echo is not None:
        echo(f"{text}\n({line})")
    return outcome


def ensure_table(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(INCIDENTS_DDL)


def open_incident(conn: psycopg.Connection, key: str, summary: str) -> bool:
    """Open `key` (or reopen a resolved one); False when it is already open."""
    with conn.transaction():
        row = conn.execute(
            "insert into alert_incidents (key, summary) values (%s, %s) "
            "on conflict (key) do update set summary = excluded.summary, "
            "opened_at = now() at time zone 'utc', resolved_at = null "
            "where alert_incidents.resolved_at is not null returning key",
            (key, summary),
        ).fetchone()
    return row is not None


def resolve_incident(conn: psycopg.Connection, key: str) -> Incident | None:
    """Resolve `key` if it is open; returns the incident it closed."""
    with conn.transaction():
        row = conn.execute(
            "update alert_incidents set resolved_at = now() at time zone 'utc' "
            "where key = %s and resolved_at is null returning key, summary, opened_at",
            (key,),
        ).fetchone()
    return Incident(*row) if row else None


def open_incidents(conn: psycopg.Connection, prefix: str = "") -> list[Incident]:
    rows = conn.execute(
        "select key, summary, opened_at from alert_incidents "
        "where resolved_at is null and starts_with(key, %s) order by key",
        (prefix,),
    ).fetchall()
    return [Incident(*r) for r in rows]


def fire(
    settings: Settings,
    key: str,
    title: str,
    text: str = "",
    echo: Callable[[str], None] | None = None,
) -> bool:
    """Announce `key` unless it is already open. Returns whether an alert went out."""
    with connect(settings, autocommit=True) as conn:
        ensure_table(conn)
        opened = open_incident(conn, key, title)
    if opened:
        deliver(Alert(key, "firing", title, text), settings.alert_webhook_url, echo)
    return opened


def clear(
    settings: Settings, key: str, text: str = "", echo: Callable[[str], None] | None = None
) -> bool:
    """Announce that `key` cleared, if it was open. Returns whether an alert went out."""
    with connect(settings, autocommit=True) as conn:
        ensure_table(conn)
        incident = resolve_incident(conn, key)
    if incident is not None:
        title = f"resolved: {incident.summary}"
        deliver(Alert(key, "resolved", title, text), settings.alert_webhook_url, echo)
    return incident is not None


def list_open(settings: Settings, prefix: str = "") -> list[Incident]:
    with connect(settings, autocommit=True) as conn:
        ensure_table(conn)
        return open_incidents(conn, prefix)
