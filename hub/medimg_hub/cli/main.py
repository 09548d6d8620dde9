"""The ``medimg`` command line: run the platform on this machine.

``medimg up`` starts the services (today: the PACS) and loads the demo sites;
``medimg down`` stops them; ``medimg status`` says what runs and where.
Every subcommand has ``--help``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from medimg_kernel.errors import MedImgError

from medimg_hub.cli import federation as cli_federation
from medimg_hub.cli.deliveries import deliveries
from medimg_hub.cli import tasks as cli_tasks
from medimg_hub.cli.datasets import datasets_group
from medimg_hub.cli.intake import import_command, pacs_group, receiver_command
from medimg_hub.cli.users import users
from medimg_hub.pacs.connection import PacsConnection
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import ServiceError
from medimg_hub.servers.runner import redact_logs
from medimg_hub.settings import CONFIG_ENV_VAR, Settings, load_settings
from medimg_hub.stack import platform_services

#: Seconds ``medimg up`` waits for the demo's pipeline runs to reach review.
DEMO_WAIT_S = 900.0

DESCRIPTIONS = {
    "pacs": "PACS (Orthanc + DICOMweb)",
    "broker": "Task queue broker (Redis)",
    "mlflow": "MLflow tracking server + model registry",
    "dispatcher": "Task dispatcher + reconciler",
    "deliveries": "Delivery worker (finalised results to hospital PACS, signed webhooks)",
    "dicom-receiver": "DICOM receiver (C-STORE from the [receiver] senders)",
    "hub": "JupyterHub (log in here; platform API at /services/platform/)",
}


def _describe(name: str) -> str:
    if name.startswith("worker-"):
        return f"Worker for group {name[len('worker-'):]!r}"
    return DESCRIPTIONS[name]

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar=CONFIG_ENV_VAR,
    help="Settings file (default: medimg.toml in the repository root; env MEDIMG_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, verbose: bool) -> None:
    """Medical-imaging research platform: PACS, pipelines, review, federated training."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = load_settings(config_file)
    redact_logs(ctx.obj)  # DICOM UIDs in log lines become pseudonyms (medimg_hub.servers.logs)
    if (ctx.obj.var_dir / "secrets" / "mlflow.json").exists():  # hub side: MLflow's platform account
        from medimg_hub.tracking.server import export_client_credentials

        export_client_credentials(ctx.obj)


@cli.command()
@click.option("--demo/--no-demo", default=True, show_default=True, help="Generate and load the synthetic demo sites.")
@click.pass_obj
def up(settings: Settings, demo: bool) -> None:
    """Start the platform's services and load the demo data (idempotent)."""
    from medimg_hub.db.migrations import upgrade

    from medimg_kernel.errors import DICOMwebError

    from medimg_hub.pacs.connection import pacs_connection

    logins: dict[str, str] = {}
    pacs = pacs_connection(settings)
    if not pacs.embedded:  # a hospital's PACS: not ours to start, but it must answer
        try:
            pacs.client().search_for_studies(limit=1)
        except DICOMwebError as exc:
            raise click.ClickException(f"the PACS at [pacs] url does not answer QIDO-RS: {exc}") from exc
        click.echo(f"PACS (external DICOMweb, {settings.pacs.auth} authentication) at {pacs.dicomweb_url}")
    for service in platform_services(settings):
        if service.name == "dispatcher":
            upgrade(settings.database_url)  # the queue's processes need the newest schema
        if service.name == "hub" and demo and settings.demo.hub_users:
            from medimg_hub.demo.users import ensure_demo_users

            logins = ensure_demo_users(settings)  # before the hub starts: it writes the hub database
        started = service.start()
        click.echo(f"{_describe(service.name)} {'started' if started else 'already running'} at {service.process.url}")
        if isinstance(service, OrthancServer):
            click.echo(f"  hub-side credentials: {service.secret_file} (mode 0600; never given to kernels)")
    if demo:
        _load_demo(settings, pacs)
        _print_logins(settings, logins)


def _print_logins(settings: Settings, created: dict[str, str]) -> None:
    from medimg_hub.demo.users import DEMO_USERS, passwords_file

    click.echo(f"Log in at http://127.0.0.1:{settings.hub.port}/ — demo logins per role:")
    for user in DEMO_USERS:
        shown = created.get(user.name, "(set earlier; see the file below)")
        click.echo(f"  {user.name:<12} {shown:<34} groups: {', '.join(user.groups)}")
    click.echo(f"  passwords are printed once; they stay in {passwords_file(settings)} (mode 0600)")


def _load_demo(settings: Settings, pacs: PacsConnection) -> None:
    from tqdm import tqdm

    from medimg_kernel.phantom.demo import generate_demo
    from medimg_hub.pacs.ingest import ingest_files

    out_dir = settings.var_dir / "demo"
    cfg = settings.demo
    total = cfg.n_sites * cfg.studies_per_site
    with tqdm(total=total, desc="generating demo studies", unit="study", file=sys.stderr) as bar:
        manifest = generate_demo(
            out_dir, n_sites=cfg.n_sites, studies_per_site=cfg.studies_per_site, seed=cfg.seed,
            progress=lambda n=1: bar.update(n),
        )
    from medimg_hub.access.datasets import ingest_assigner, seed_datasets
    from medimg_hub.db import make_engine

    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)  # the demo sites are datasets granted to demo groups
    files = [out_dir / f for study in manifest.studies for f in study.files]
    with tqdm(total=len(files), desc="loading into the PACS", unit="instance", file=sys.stderr) as bar:
        report = ingest_files(pacs.client(), files, progress=bar.update, assign=ingest_assigner(engine))
    engine.dispose()
    click.echo(
        f"Demo sites loaded: {len(manifest.sites)} sites, {len(manifest.studies)} studies "
        f"({report.instances_stored} instances stored now, {len(report.skipped)} studies already present)"
    )
    for site in manifest.sites:
        n = sum(1 for s in manifest.studies if s.site == site)
        click.echo(f"  {site}: {n} studies")
    click.echo(f"  manifest (study → site): {out_dir / 'manifest.json'}")
    _run_demo_pipeline(settings, manifest)


def _demo_datasets(settings: Settings, manifest: Any) -> dict[str, str]:
    """StudyInstanceUID → dataset of the demo studies, from the platform database."""
    from medimg_hub.access.datasets import DatasetDirectory
    from medimg_hub.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        return DatasetDirectory(engine).datasets_of(s.study_instance_uid for s in manifest.studies)
    finally:
        engine.dispose()


def _run_demo_pipeline(settings: Settings, manifest: Any) -> None:
    from tqdm import tqdm

    from medimg_kernel.registry import FIRST_MODEL_EPOCHS

    from medimg_hub.demo.runs import DEMO_PIPELINE, ensure_demo_model, submit_demo_runs, wait_for_reviews
    from medimg_hub.pipeline.service import TaskService

    with tqdm(total=FIRST_MODEL_EPOCHS, desc="training the demo model (only if none is registered)",
              unit="epoch", file=sys.stderr) as bar:
        version, trained = ensure_demo_model(settings, progress=bar.update)
    model = f"{settings.mlflow.registered_model}@{settings.mlflow.model_alias}"
    click.echo(f"Model {model}: version {version} ({'trained now' if trained else 'already registered'}); "
               f"runs and registry at {settings.mlflow_tracking_uri}")
    service = TaskService(settings)
    try:
        submitted = submit_demo_runs(service, manifest, _demo_datasets(settings, manifest))
        if submitted:
            with tqdm(total=len(submitted), desc=f"{DEMO_PIPELINE} on the demo studies", unit="study",
                      file=sys.stderr) as bar:
                waiting = wait_for_reviews(service, [t.id for t in submitted], at_least=len(submitted),
                                           timeout_s=DEMO_WAIT_S, progress=bar.update)
            click.echo(f"Pipeline {DEMO_PIPELINE}: {len(submitted)} runs submitted, {waiting} waiting for review")
        else:
            click.echo(f"Pipeline {DEMO_PIPELINE}: every demo study already has a run")
    finally:
        service.close()
    click.echo("  follow runs:  .venv/bin/medimg tasks list")
    click.echo("  review a case: log in as a resident or attending below (the Voila worklist), or "
               ".venv/bin/medimg tasks decide JOB_ID accepted --actor NAME")


@cli.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the platform's services. Stored data stays under var/ and mlruns/."""
    failures = []
    for service in reversed(platform_services(settings)):
        try:
            stopped = service.stop()
        except Exception as exc:  # noqa: BLE001 - stop the others anyway, then report
            failures.append(f"{service.name}: {exc}")
            continue
        click.echo(f"{_describe(service.name)} {'stopped' if stopped else 'was not running'}")
    if failures:
        raise ServiceError("some services did not stop: " + "; ".join(failures))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Say which services run, where, and where their logs are."""
    rows = [service.process.status() for service in platform_services(settings)]
    if as_json:
        click.echo(json.dumps([{**r.__dict__, "log_file": str(r.log_file)} for r in rows], indent=2))
        return
    for row in rows:
        state = f"running (pid {row.pid})" if row.running else "stopped"
        click.echo(f"{row.name:<10} {state:<22} {row.url}  log: {row.log_file}")


@cli.command()
@click.pass_obj
def config(settings: Settings) -> None:
    """Print the effective settings (defaults merged with the settings file)."""
    click.echo(json.dumps(settings.as_dict(), indent=2))


for _command in (cli_tasks.pipelines, cli_tasks.tasks, cli_tasks.worker, cli_tasks.dispatcher, cli_tasks.migrate,
                 cli_federation.fl, users, import_command, receiver_command, datasets_group, pacs_group, deliveries):
    cli.add_command(_command)


def main() -> None:
    """Entry point: report our own errors as one clear line, exit code 1."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own bars say enough
    try:
        cli(standalone_mode=True)
    except MedImgError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
