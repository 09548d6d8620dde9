"""How images come in from the command line: ``medimg import`` (files, folders, zip archives, DICOMDIRs),
``medimg receiver`` (the DICOM C-STORE receiver, in this process) (``medimg datasets`` is :mod:`medimg_hub.cli.datasets`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from medimg_hub.settings import Settings


def platform_engine(settings: Settings) -> Any:
    """The platform database, migrated to the newest schema and with the ``[[datasets]]`` of the
    settings file, as ``medimg up`` leaves it: these commands work before the platform ever ran."""
    from medimg_hub.access.datasets import seed_datasets
    from medimg_hub.db import make_engine
    from medimg_hub.db.migrations import upgrade

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    return engine


def _audit(settings: Settings, action: str, rows: list[tuple[str | None, str | None, bool, str]]) -> None:
    """Audit rows of a command: (study, dataset, ok, detail) each; the operator's account as the user.
    Details hold counts and reasons only, never file names (they may carry patient names)."""
    import getpass
    import uuid

    from medimg_hub.access.audit import AuditLog, AuditRecord
    from medimg_hub.access.models import Outcome
    from medimg_hub.db import make_engine

    engine = make_engine(settings.database_url)
    log = AuditLog(engine)
    request_id = uuid.uuid4().hex
    for study, dataset, ok, detail in rows:
        log.append(AuditRecord(user=f"cli:{getpass.getuser()}", groups=(), action=action,
                               outcome=Outcome.ALLOWED if ok else Outcome.ERROR, status=0, request_id=request_id,
                               study_instance_uid=study, dataset=dataset, detail=detail))
    engine.dispose()


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--dataset", default=None,
              help="Put every imported study in this dataset (default: by InstitutionName, as [[datasets]] say; "
                   "a study that matches none stays unassigned, visible to admins only).")
@click.option("--batch-mb", default=64, show_default=True, help="Upper size of one STOW-RS request, in MB.")
@click.pass_obj
def import_command(settings: Settings, paths: tuple[str, ...], dataset: str | None, batch_mb: int) -> None:
    """Import DICOM files into the platform PACS: files, folders (recursively), zip archives, DICOMDIRs.

    Idempotent: instances the PACS holds already are not sent again. Files that are not DICOM or
    are malformed are listed with the reason and skipped; the rest goes on. Exits 1 when a file
    was skipped, 0 otherwise.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import sessionmaker
    from tqdm import tqdm

    from medimg_kernel.errors import AccessDeniedError
    from medimg_kernel.importer import discover, import_files

    from medimg_hub.access.datasets import DatasetDirectory, assign_study, ingest_assigner
    from medimg_hub.access.models import Dataset, DatasetStudy
    from medimg_hub.pacs.connection import pacs_connection

    engine = platform_engine(settings)
    sessions = sessionmaker(engine)
    unassigned: list[str] = []
    if dataset is not None:
        with sessions() as session:
            if session.get(Dataset, dataset) is None:
                known = ", ".join(sorted(session.scalars(select(Dataset.name))))
                raise click.BadParameter(f"no dataset {dataset!r}; known: {known or 'none'}", param_hint="--dataset")

        def assign(study: str, institution: str | None) -> None:
            with sessions.begin() as session:
                if assign_study(session, study, institution, dataset=dataset) != dataset:
                    raise AccessDeniedError("it is in another dataset already; nothing of it was stored (move it "
                                            "first, or import without --dataset)")
    else:
        by_institution = ingest_assigner(engine)

        def assign(study: str, institution: str | None) -> None:
            by_institution(study, institution)
            with sessions() as session:
                if session.get(DatasetStudy, study) is None:
                    unassigned.append(study)

    total = sum(1 for _ in discover(paths))
    pacs = pacs_connection(settings)
    with tqdm(total=total, desc="importing", unit="file", file=sys.stderr) as bar:
        report = import_files(pacs.client(), paths, assign=assign, progress=bar.update,
                              batch_bytes=batch_mb * 1024 * 1024)
    directory = DatasetDirectory(engine, ttl_s=0)
    rows = [(study, directory.dataset_of(study), True,
             f"{report.stored.get(study, 0)} instances imported, {report.present.get(study, 0)} already present")
            for study in sorted(report.studies)]
    if report.skipped:
        rows.append((None, dataset, False, f"{len(report.skipped)} files skipped (not DICOM, malformed, duplicate, "
                                            "unsafe archive member or refused)"))
    _audit(settings, "import", rows)
    engine.dispose()
    click.echo(report.summary())
    for skipped in report.skipped:
        click.echo(f"  skipped {skipped.source}: {skipped.reason}")
    if unassigned:
        click.echo(f"  {len(unassigned)} studies are in no dataset (their InstitutionName matches no [[datasets]] "
                   "table): visible to admins only")
    if report.skipped:
        sys.exit(1)


@click.command("receiver")
@click.pass_obj
def receiver_command(settings: Settings) -> None:
    """Run the DICOM receiver ([receiver], [[routes]]) in this process (``medimg up`` starts it when its port is set)."""
    from medimg_hub.pacs.receiver import run_receiver

    if not settings.receiver.port:
        raise click.ClickException("[receiver] port is 0 (off): set it, and the senders allowed, in the settings file")
    run_receiver(settings)


@click.group("pacs")
def pacs_group() -> None:
    """Other PACS ([[remotes]]): pull studies from them into a dataset."""


@pacs_group.command("pull")
@click.option("--from", "remote", default=None, help="The [[remotes]] table to pull from.")
@click.option("--query", "queries", multiple=True,
              help="Cohort on the remote: KEY=VALUE (repeat; all must match), as `medimg tasks submit --query`.")
@click.option("--dataset", default=None, help="The dataset the pulled studies go into.")
@click.option("--deidentify/--keep-identifiers", default=True, show_default=True,
              help="De-identify at the door (PS3.15 basic profile, consistent pseudonyms and UIDs).")
@click.option("--resume", "job_id", default=None, help="Re-run what a pull job has not done (its id).")
@click.pass_obj
def pacs_pull(settings: Settings, remote: str | None, queries: tuple[str, ...], dataset: str | None,
              deidentify: bool, job_id: str | None) -> None:
    """Pull a cohort from a remote PACS into a dataset; a resumable job (exit 1 if a study failed)."""
    from tqdm import tqdm

    from medimg_hub.cli.tasks import parse_pairs
    from medimg_hub.pacs.connection import pacs_connection, remote_connection
    from medimg_hub.pacs.pull import load_job, new_job, run_pull, save_job

    if job_id:
        job = load_job(settings, job_id)
    else:
        if not remote or not dataset or not queries:
            raise click.UsageError("give --from, --dataset and at least one --query (or --resume JOB)")
        job = new_job(remote, parse_pairs(queries, "--query"), dataset, deidentify)
    source = remote_connection(settings, job.remote).client()
    target = pacs_connection(settings).client()
    click.echo(f"pull {job.id}: from {job.remote} into {job.dataset}"
               f"{', de-identified' if job.deidentify else ', identifiers kept'} (state: {save_job(settings, job)})")
    with tqdm(total=None, desc="pulling", unit="study", file=sys.stderr) as bar:
        job = run_pull(settings, job, source, target, progress=bar.update)
    _audit(settings, "pull", [(job.stored_as.get(study), job.dataset, state == "done",
                               f"pull {job.id} from {job.remote}" + (", de-identified" if job.deidentify else "")
                               + ("" if state == "done" else f": {state[:120]}")) for study, state in job.studies.items()])
    click.echo(f"{job.done} of {len(job.studies)} studies pulled into {job.dataset}")
    for study, state in job.failed.items():
        click.echo(f"  study {list(job.studies).index(study) + 1}: {state}")
    for note in job.skipped:
        click.echo(f"  skipped {note}")
    if not job.studies:
        click.echo("no study on the remote matches the query; nothing was pulled")
    if job.failed:
        click.echo(f"resume with: medimg pacs pull --resume {job.id}")
        sys.exit(1)
