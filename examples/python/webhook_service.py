"""The guide's service helper ("Método 2") for a Python app, against Hookline. Standard library only.

Hookline's own helper (TypeScript) writes the event in the transaction that creates the resource.
A Python app cannot share that transaction with Hookline, so this helper keeps the same guarantee
with an outbox of the app's own:

- ``WebhookService(db).trigger_event(...)`` writes the event into the ``hookline_outbox`` table
  through ``db``, the app's DB-API connection (sqlite3, psycopg...), inside the app's transaction: the event exists if
  and only if the business change commits (nothing is sent yet).
- ``relay(db, hookline_url, token_for_tenant)`` sends what the outbox holds to Hookline (REST
  ``POST deliveries``), oldest first, each row with its own id as the ``idempotency_key``, and marks
  it sent. Call it after each commit and from a periodic job: a crash between the commit and the
  send leaves the row for the next run, and a row sent again (a crash after Hookline's 202, before
  the mark) is still one event, since Hookline returns the first for a repeated key within 24 hours.
  Run the periodic job well within those 24 hours.

Usage (sqlite3 shown; for psycopg pass ``placeholder="%s"``)::

    service = WebhookService(db)
    with db:  # the app's transaction
        invoice = create_invoice_in_db(db, invoice_data, tenant_id)
        service.trigger_event(tenant_id=tenant_id, event="invoice.created", resource_type="invoice",
                              resource_id=invoice.id, data={...})
    relay(db, "http://localhost:4000", lambda tenant_id: TOKENS[tenant_id])
"""
import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

OUTBOX_TABLE = """create table if not exists hookline_outbox (
  id text primary key,
  tenant_id text not null,
  event text not null,
  resource_type text,
  resource_id text,
  data text not null,
  created_at text not null,
  sent_at text,
  event_id text,
  refused text
)"""


def _execute(db, sql: str, params=()):
    cursor = db.cursor()
    cursor.execute(sql, params)
    return cursor


def create_outbox(db) -> None:
    """Creates the outbox table if it is not there (or put OUTBOX_TABLE in the app's migrations)."""
    _execute(db, OUTBOX_TABLE)


class WebhookService:
    """The guide's ``WebhookService(db)``: ``trigger_event`` joins the caller's transaction on ``db``."""

    def __init__(self, db, placeholder: str = "?"):
        self.db = db
        self.placeholder = placeholder

    def trigger_event(self, tenant_id: str, event: str, resource_type=None, resource_id=None, data=None) -> str:
        """Records the event in the outbox, in the caller's transaction; returns the outbox row's id."""
        row_id = str(uuid.uuid4())
        p = self.placeholder
        _execute(
            self.db,
            f"insert into hookline_outbox (id, tenant_id, event, resource_type, resource_id, data, created_at)"
            f" values ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (
                row_id,
                str(tenant_id),
                event,
                resource_type,
                None if resource_id is None else str(resource_id),
                json.dumps(data if data is not None else {}),
                datetime.now(timezone.utc).isoformat(),
            ),
        )
        return row_id


class RelayError(Exception):
    """Hookline could not be reached, answered 5xx, or has no such endpoint (404: a wrong
    ``hookline_url``): the rows wait for the next run."""


def relay(db, hookline_url: str, token_for_tenant, placeholder: str = "?", limit: int = 100, timeout: float = 10.0) -> dict:
    """Sends up to ``limit`` unsent outbox rows to Hookline, oldest first, committing after each
    (the rows of tenants held, below, are passed over and not counted).

    Returns ``sent`` (202, a new event), ``duplicates`` (202 for a row Hookline had already
    taken), ``refused`` (400 or 413: Hookline will never take that row; its answer is kept in the
    row's ``refused`` column and it is not sent again) and ``held``: the tenants whose rows wait
    for the next run because Hookline would not take them now (401 or 403: a wrong or revoked
    token; 429: the key's rate limit), with its answer; the other tenants' rows go on. Raises
    RelayError when Hookline cannot take any row now, leaving them all for the next run.

    The envelope's ``timestamp`` is when Hookline takes the event, not the row's ``created_at``:
    a row relayed late carries the relay's time (put the change's own time in ``data`` if the
    receivers need it).
    """
    p = placeholder
    url = hookline_url.rstrip("/") + "/api/v1/tenant/webhooks/deliveries"
    counts = {"sent": 0, "duplicates": 0, "refused": 0, "held": {}}
    held = counts["held"]
    handled = 0
    while handled < limit:
        skip = ""
        if held:
            skip = f" and tenant_id not in ({', '.join([p] * len(held))})"
        rows = _execute(
            db,
            "select id, tenant_id, event, resource_type, resource_id, data from hookline_outbox"
            f" where sent_at is null and refused is null{skip} order by created_at, id limit {int(limit - handled)}",
            tuple(held),
        ).fetchall()
        db.commit()  # the read alone, so the sends below are not inside a long transaction
        if not rows:
            break
        for row_id, tenant_id, event, resource_type, resource_id, data in rows:
            if tenant_id in held or handled >= limit:
                continue
            body = {"event": event, "payload": json.loads(data), "idempotency_key": f"outbox-{row_id}"}
            if resource_type is not None:
                body["resource_type"] = resource_type
            if resource_id is not None:
                body["resource_id"] = resource_id
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Authorization": f"Bearer {token_for_tenant(tenant_id)}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    answer = json.load(response)
            except urllib.error.HTTPError as error:
                text = error.read().decode("utf-8", "replace")
                if error.code in (400, 413):
                    _execute(db, f"update hookline_outbox set refused = {p} where id = {p}", (f"{error.code} {text}", row_id))
                    db.commit()
                    counts["refused"] += 1
                    handled += 1
                elif error.code in (401, 403, 429):
                    held[tenant_id] = f"{error.code} {text}"
                else:
                    raise RelayError(f"Hookline answered {error.code}: {text}") from error
                continue
            except (urllib.error.URLError, OSError) as error:
                raise RelayError(f"Hookline could not be reached: {error}") from error
            _execute(
                db,
                f"update hookline_outbox set sent_at = {p}, event_id = {p} where id = {p}",
                (datetime.now(timezone.utc).isoformat(), answer["event_id"], row_id),
            )
            db.commit()
            counts["duplicates" if answer.get("duplicate") else "sent"] += 1
            handled += 1
    return counts
