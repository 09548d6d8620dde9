"""``medimg deliveries``: the outbox of finalised results (pushes to hospital PACS, signed webhooks).

``run`` is the delivery worker (``medimg up`` starts it when a dataset exports); ``list`` shows
what is pending, delivered or failed and why; ``retry ID`` sends a delivery again now.
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING

import click

from medimg_hub.settings import Settings

if TYPE_CHECKING:  # imported when a command runs: `medimg --help` stays quick
    from medimg_hub.delivery.outbox import Outbox


def _outbox(settings: Settings) -> Outbox:
    """The outbox on the platform database, migrated first."""
    from medimg_hub.db import make_engine
    from medimg_hub.db.migrations import upgrade
    from medimg_hub.delivery.outbox import Outbox

    upgrade(settings.database_url)  # idempotent: works before the platform ever ran
    return Outbox(make_engine(settings.database_url))


@click.group()
def deliveries() -> None:
    """Finalised results leaving the platform: list, retry, and the worker that sends them."""


@deliveries.command("run")
@click.pass_obj
def deliveries_run(settings: Settings) -> None:
    """Run the delivery worker in this process until SIGTERM or Ctrl-C."""
    from medimg_hub.db.migrations import upgrade
    from medimg_hub.delivery.worker import run_deliveries

    upgrade(settings.database_url)
    run_deliveries(settings)


@deliveries.command("list")
@click.option("--pending", is_flag=True, help="Only deliveries still to be sent (pending).")
@click.option("--failed", is_flag=True, help="Only deliveries that gave up (retry them with `retry ID`).")
@click.option("--job", "job_id", default=None, help="Only the deliveries of this review job.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def deliveries_list(settings: Settings, pending: bool, failed: bool, job_id: str | None, limit: int,
                    as_json: bool) -> None:
    """List deliveries, newest first: target, status, attempts, next attempt, last error."""
    status = "pending" if pending else "failed" if failed else None
    records = _outbox(settings).list_deliveries(status=status, job_id=job_id, limit=limit)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in records], indent=2))
        return
    if not records:
        click.echo("no deliveries" + (f" {status}" if status else ""))
    for r in records:
        when = (f"delivered {r.delivered_at:%Y-%m-%d %H:%M:%S}" if r.delivered_at else
                f"next {r.next_attempt_at:%Y-%m-%d %H:%M:%S}" if r.status.value == "pending" else "gave up")
        click.echo(f"{r.id:>6}  {r.kind.value:<8} {r.target:<20} {r.status.value:<9} attempts {r.attempts:<3} "
                   f"{when}  job {r.job_id} ({r.payload.get('decision')})")
        if r.last_error and r.status.value != "delivered":
            click.echo(f"        last error: {r.last_error}")


@deliveries.command("retry")
@click.argument("delivery_id", type=int)
@click.option("--actor", default=None, help="Who asks (audit log; default: this OS account).")
@click.pass_obj
def deliveries_retry(settings: Settings, delivery_id: int, actor: str | None) -> None:
    """Send delivery DELIVERY_ID again now, with a fresh count of attempts (a running worker picks it up)."""
    record = _outbox(settings).retry(delivery_id, actor or f"cli:{getpass.getuser()}")
    click.echo(f"{record.id}: {record.status.value} ({record.kind.value} {record.target}), due now")
