"""``medimg pipelines`` and ``medimg tasks``: run pipelines over studies and follow them;
``medimg worker`` and ``medimg dispatcher``: the queue's processes (``medimg up`` starts them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from medimg_hub.settings import Settings


def parse_pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=what)
        out[key] = value
    return out


@click.group()
def pipelines() -> None:
    """Pipelines: parameterised notebooks run as stages on the task queue."""


@pipelines.command("new")
@click.argument("pipeline_id")
@click.option("--name", default=None, help="Display name (default: from the id).")
@click.option("--worker-group", default="default", show_default=True, help="Worker group of its auto stage.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Folder of pipelines (default: [pipelines] root of medimg.toml).")
@click.pass_obj
def pipelines_new(settings: Settings, pipeline_id: str, name: str | None, worker_group: str, root: str | None) -> None:
    """Scaffold pipeline PIPELINE_ID: a descriptor, its stage notebook (with a parameters cell) and a test."""
    from medimg_kernel.errors import PipelineError
    from medimg_kernel.pipeline.scaffold import scaffold_pipeline

    folder_root = Path(root) if root else settings.resolve(settings.pipelines.root)
    try:
        folder = scaffold_pipeline(folder_root, pipeline_id, name=name, worker_group=worker_group)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"pipeline {pipeline_id} written to {folder}: edit run.ipynb and pipeline.yaml, then run its test:")
    click.echo(f"  .venv/bin/python -m pytest {folder}/test_pipeline.py")


@pipelines.command("list")
@click.pass_obj
def pipelines_list(settings: Settings) -> None:
    """List the pipelines with their stages and parameters."""
    from medimg_hub.pipeline.service import TaskService

    for pipeline in TaskService(settings).pipelines().values():
        click.echo(f"{pipeline.id} {pipeline.version}: {pipeline.name}")
        for stage in pipeline.stages:
            where = f"queue {stage.worker_group}" if stage.worker_group else "review dashboard"
            click.echo(f"  stage {stage.id} ({stage.kind.value}, {where})")
        for param in pipeline.parameters:
            default = "required" if param.required else f"default {param.default!r}"
            click.echo(f"  --param {param.name}=<{param.type.value}>  ({default}) {param.description}")


@click.group()
def tasks() -> None:
    """Pipeline runs: submit, list, show, cancel, decide."""


@tasks.command("submit")
@click.argument("pipeline_id")
@click.option("--study", "studies", multiple=True, help="StudyInstanceUID (repeat for a cohort).")
@click.option("--query", "queries", multiple=True,
              help="Cohort by QIDO-RS: KEY=VALUE (repeat; all must match), e.g. \"InstitutionName=Northfield General "
                   "Hospital (synthetic)\", PatientID=SITEA*, StudyDate=20200101-20201231, Modality=CT.")
@click.option("--all-studies", is_flag=True, help="Every study in the PACS.")
@click.option("--series-filter", "series_filters", multiple=True, default=("Modality=CT",), show_default=True,
              help="KEY=VALUE selecting the one series per study the pipeline runs on.")
@click.option("-p", "--param", "params", multiple=True, help="Pipeline parameter NAME=VALUE.")
@click.option("--owner", default="admin", show_default=True, help="Hub user the runs belong to.")
@click.option("--dataset", default=None, help="Dataset the runs belong to.")
@click.pass_obj
def tasks_submit(settings: Settings, pipeline_id: str, studies: tuple[str, ...], queries: tuple[str, ...],
                 all_studies: bool, series_filters: tuple[str, ...], params: tuple[str, ...], owner: str,
                 dataset: str | None) -> None:
    """Run PIPELINE_ID for one study, a list of studies or a query (validated before queuing)."""
    from tqdm import tqdm

    from medimg_kernel.cohort import find_studies
    from medimg_kernel.qido import QueryError

    from medimg_hub.pacs.connection import pacs_connection
    from medimg_hub.pipeline.service import TaskService, resolve_targets

    service = TaskService(settings)
    service.pipeline(pipeline_id)  # an unknown pipeline is refused before the PACS is asked
    targets = []
    if studies or queries or all_studies:
        client = pacs_connection(settings).client()
        uids = list(studies)
        if queries or all_studies:
            query = parse_pairs(queries, "--query")
            try:
                found = find_studies(client, query)
            except QueryError as exc:
                raise click.BadParameter(str(exc), param_hint="--query") from exc
            if not found:
                shown = " ".join(f"{k}={v!r}" for k, v in query.items()) or "(every study)"
                raise click.ClickException(f"no study matches {shown}; nothing was queued. Values match exactly "
                                           "unless they hold * or ? (wildcards); dates take ranges (20200101-20201231)")
            uids += [u for u in found if u not in uids]
        targets = resolve_targets(client, uids, parse_pairs(series_filters, "--series-filter"))
    with tqdm(total=max(len(targets), 1), desc=f"submitting {pipeline_id}", unit="run", file=sys.stderr) as bar:
        created = service.submit(pipeline_id, parse_pairs(params, "--param"), owner=owner, targets=targets,
                                 dataset=dataset, progress=bar.update)
    for task in created:
        click.echo(f"{task.id}  {task.status.value:<10} study {task.study_instance_uid or '-'}")


@tasks.command("list")
@click.option("--status", default=None, help="Only runs in this status.")
@click.option("--pipeline", "pipeline_id", default=None, help="Only runs of this pipeline.")
@click.option("--limit", default=50, show_default=True)
@click.pass_obj
def tasks_list(settings: Settings, status: str | None, pipeline_id: str | None, limit: int) -> None:
    """List runs, newest first, with the status of each stage."""
    from medimg_hub.pipeline.service import TaskService

    for task in TaskService(settings).list_tasks(status=status, pipeline_id=pipeline_id, limit=limit):
        stages = " ".join(f"{j.stage_id}={j.status.value}" for j in task.jobs)
        click.echo(f"{task.id}  {task.pipeline_id:<22} {task.status.value:<15} {task.created_at:%Y-%m-%d %H:%M}  {stages}")


@tasks.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def tasks_show(settings: Settings, task_id: str, as_json: bool) -> None:
    """Show a run: each job's status, attempts, error, outputs (SEG/SR UIDs, executed notebook, MLflow run)."""
    from medimg_hub.pipeline.service import TaskService

    service = TaskService(settings)
    task = service.task(task_id)
    if as_json:
        click.echo(json.dumps(_task_json(task, service), indent=2, default=str))
        return
    click.echo(f"task {task.id}: {task.pipeline_id} {task.pipeline_version}, {task.status.value}, owner {task.owner}")
    for job in task.jobs:
        click.echo(f"  job {job.id} stage {job.stage_id}: {job.status.value} (attempt {job.attempts}/{job.max_attempts})")
        if job.error:
            click.echo(f"    error: {job.error}")
        for key, value in sorted(job.outputs.items()):
            click.echo(f"    {key}: {value}")


def _task_json(task: Any, service: Any) -> dict[str, Any]:
    history = service.store.history(task_id=task.id)
    return {
        "task": {k: v for k, v in task.__dict__.items() if k != "jobs"},
        "jobs": [job.__dict__ for job in task.jobs],
        "history": [h.__dict__ for h in history],
    }


@tasks.command("cancel")
@click.argument("task_id")
@click.option("--actor", default="admin", show_default=True)
@click.option("--reason", default=None)
@click.pass_obj
def tasks_cancel(settings: Settings, task_id: str, actor: str, reason: str | None) -> None:
    """Cancel a run: queued stages at once, a running one as soon as its worker notices."""
    from medimg_hub.pipeline.service import TaskService

    task = TaskService(settings).cancel(task_id, actor=actor, reason=reason)
    click.echo(f"{task.id}: {task.status.value}")


@tasks.command("decide")
@click.argument("job_id")
@click.argument("decision", type=click.Choice(["accepted", "corrected", "rejected"]))
@click.option("--actor", required=True, help="Who decides (recorded in the job's history).")
@click.option("--reason", default=None, help="Why (required in practice for a rejection).")
@click.pass_obj
def tasks_decide(settings: Settings, job_id: str, decision: str, actor: str, reason: str | None) -> None:
    """Complete a manual (review) stage. The review dashboard (#5) will call the same API."""
    from medimg_hub.pipeline.service import TaskService

    job = TaskService(settings).decide(job_id, decision, actor=actor, reason=reason)
    click.echo(f"{job.id}: {job.status.value} by {job.decided_by}")


@click.command()
@click.argument("group")
@click.pass_obj
def worker(settings: Settings, group: str) -> None:
    """Serve one worker group's queue in this process (one job at a time, warm kernel)."""
    from medimg_hub.pipeline.worker import run_worker

    if group not in settings.queue.worker_groups:
        click.echo(f"note: {group!r} is not in [queue] worker_groups {list(settings.queue.worker_groups)}", err=True)
    run_worker(settings, group)


@click.command()
@click.pass_obj
def dispatcher(settings: Settings) -> None:
    """Run the dispatcher loop (recover lost jobs, re-send lost messages) in this process."""
    from medimg_hub.pipeline.dispatcher import run_dispatcher

    run_dispatcher(settings)


@click.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Migrate the platform database to the newest schema (``medimg up`` does this too)."""
    from medimg_hub.db.migrations import upgrade

    upgrade(settings.database_url)
    click.echo(f"database at the newest schema: {settings.database_url.split('@')[-1]}")
