"""``medimg datasets``: datasets administered from the command line (the same changes as the platform
API and the admins' page, audited as ``cli:<your account>``)."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click

from medimg_hub.settings import Settings


def _operations(settings: Settings) -> Any:
    """Dataset operations on the platform database; groups are looked up in the hub's database."""
    from jupyterhub import orm

    from medimg_hub.cli.intake import platform_engine
    from medimg_hub.datasets.operations import DatasetOperations
    from medimg_hub.hubconf.state import HubState

    from medimg_hub.datasets.administration import DatasetAdminError

    state = HubState.for_settings(settings)

    def group_exists(name: str) -> bool:
        if not (state.hub_dir / "jupyterhub.sqlite").exists():
            raise DatasetAdminError(f"the hub has not run yet (no {state.hub_dir / 'jupyterhub.sqlite'}), so it has no "
                                    "groups: start it with `medimg up` and create the group first")
        session = orm.new_session_factory(state.db_url)()
        try:
            return orm.Group.find(session, name) is not None
        finally:
            session.close()

    return DatasetOperations(settings, platform_engine(settings), group_exists=group_exists)


def _who() -> dict[str, Any]:
    return {"actor": f"cli:{getpass.getuser()}", "groups": ()}


def _run(fn: Any) -> Any:
    """Run a change; a refusal is one line on stderr and exit status 1 (nothing was changed)."""
    from medimg_hub.datasets.administration import DatasetAdminError

    try:
        return fn()
    except DatasetAdminError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.group("datasets")
def datasets_group() -> None:
    """Datasets: their studies, saved rules and grants (changes take effect without a restart)."""


@datasets_group.command("list")
@click.pass_obj
def datasets_list(settings: Settings) -> None:
    """Every dataset with its number of studies, grants and rules."""
    for view in _operations(settings).admin.list():
        grants = "; ".join(f"{right}: {', '.join(groups)}" for right, groups in view.grants.items() if groups)
        click.echo(f"{view.name:<20} {view.studies:>6} studies  {view.description or ''}")
        click.echo(f"{'':<20} grants  {grants or 'none'}")
        for rule in view.rules:
            click.echo(f"{'':<20} rule {rule['id']}: " + "&".join(f"{k}={v}" for k, v in rule["query"].items()))


@datasets_group.command("unassigned")
@click.pass_obj
def datasets_unassigned(settings: Settings) -> None:
    """Studies in the PACS that are in no dataset (nobody but admins sees them); exits 1 if there are any."""
    found = _run(lambda: _operations(settings).unassigned())
    for row in found:
        click.echo(f"{row['study_uid']}  date {row['date'] or '-'}  {','.join(row['modalities']) or '-'}  "
                   f"{row['instances'] if row['instances'] is not None else '?'} instances")
    click.echo(f"{len(found)} studies in no dataset")
    if found:
        sys.exit(1)


@datasets_group.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the dataset holds.")
@click.option("--institution", default="", help="InstitutionName of arriving studies that join it.")
@click.pass_obj
def datasets_create(settings: Settings, name: str, description: str, institution: str) -> None:
    """Create dataset NAME (empty, without grants)."""
    view = _run(lambda: _operations(settings).admin.create(name, description=description, institution=institution,
                                                           **_who()))
    click.echo(f"dataset {view.name} created")


@datasets_group.command("rename")
@click.argument("name")
@click.argument("new_name")
@click.pass_obj
def datasets_rename(settings: Settings, name: str, new_name: str) -> None:
    """Rename dataset NAME to NEW_NAME: its studies, grants, rules, tasks and MLflow experiments follow."""
    answer = _run(lambda: _operations(settings).update(name, new_name=new_name, **_who()))
    click.echo(f"dataset {name} is now {answer['name']}" + (f"; MLflow: {answer['mlflow']}" if "mlflow" in answer else ""))


@datasets_group.command("describe")
@click.argument("name")
@click.argument("description")
@click.pass_obj
def datasets_describe(settings: Settings, name: str, description: str) -> None:
    """Set dataset NAME's description."""
    _run(lambda: _operations(settings).update(name, description=description, **_who()))
    click.echo(f"dataset {name} described")


@datasets_group.command("add")
@click.argument("name")
@click.argument("study_uids", nargs=-1, required=True)
@click.pass_obj
def datasets_add(settings: Settings, name: str, study_uids: tuple[str, ...]) -> None:
    """Put studies in dataset NAME (moved from another dataset unless a review of them is open there)."""
    placed = _run(lambda: _operations(settings).admin.add_studies(name, study_uids, **_who()))
    click.echo(f"{len(placed.added)} added, {len(placed.moved)} moved from other datasets, "
               f"{len(placed.already)} were in {name} already")


@datasets_group.command("remove")
@click.argument("name")
@click.argument("study_uids", nargs=-1, required=True)
@click.pass_obj
def datasets_remove(settings: Settings, name: str, study_uids: tuple[str, ...]) -> None:
    """Take studies out of dataset NAME (refused while a review of them is open)."""
    removed = _run(lambda: _operations(settings).admin.remove_studies(name, study_uids, **_who()))
    click.echo(f"{removed} studies removed from {name}")


@datasets_group.command("grant")
@click.argument("name")
@click.argument("group")
@click.argument("right")
@click.pass_obj
def datasets_grant(settings: Settings, name: str, group: str, right: str) -> None:
    """Give hub GROUP a RIGHT (read, write, review, finalise, export) on dataset NAME."""
    added = _run(lambda: _operations(settings).grant(name, group, right, **_who()))
    click.echo(f"{group} may {right} {name}" + ("" if added else " (already could)"))


@datasets_group.command("revoke")
@click.argument("name")
@click.argument("group")
@click.argument("right")
@click.pass_obj
def datasets_revoke(settings: Settings, name: str, group: str, right: str) -> None:
    """Take RIGHT on dataset NAME from hub GROUP."""
    removed = _run(lambda: _operations(settings).admin.revoke(name, group, right, **_who()))
    click.echo(f"{group} may no longer {right} {name}" if removed else f"{group} had no {right} right on {name}")


@datasets_group.group("rule")
def datasets_rule() -> None:
    """Saved query rules: the PACS's studies that match join the dataset."""


@datasets_rule.command("add")
@click.argument("name")
@click.option("--query", "queries", multiple=True, required=True,
              help="ATTRIBUTE=VALUE (QIDO-RS matching: wildcards, ranges); repeat for several.")
@click.pass_obj
def datasets_rule_add(settings: Settings, name: str, queries: tuple[str, ...]) -> None:
    """Save a rule for dataset NAME; the studies matching it now join at once, later arrivals within
    ``[platform] dataset_rules_interval_s``."""
    from medimg_hub.cli.tasks import parse_pairs

    filters = parse_pairs(queries, "--query")
    rule_id, placed = _run(lambda: _operations(settings).add_rule(name, filters, **_who()))
    click.echo(f"rule {rule_id}: {len(placed.added)} studies added, {len(placed.moved)} moved from other datasets, "
               f"{len(placed.already)} were in {name} already")


@datasets_rule.command("remove")
@click.argument("rule_id", type=int)
@click.pass_obj
def datasets_rule_remove(settings: Settings, rule_id: int) -> None:
    """Delete rule RULE_ID (the studies it brought stay)."""
    _run(lambda: _operations(settings).admin.remove_rule(rule_id, **_who()))
    click.echo(f"rule {rule_id} removed")


@datasets_rule.command("apply")
@click.pass_obj
def datasets_rule_apply(settings: Settings) -> None:
    """Apply every saved rule to the studies in no dataset now (the platform does it periodically)."""
    joined = _run(lambda: _operations(settings).apply_rules())
    click.echo(f"{joined} studies joined their rule's dataset")
