"""README.md's commands, run as a newcomer runs them.

:data:`COMMANDS` is the table of every command in README.md's ```bash blocks, in the order the walk
runs them, with what the walk changes in each (only placeholders and example paths: see
:class:`Command`), the exit status the README promises and a few phrases of its output.

* :func:`test_every_readme_command_is_in_the_table` (fast) reads README.md and fails on a command the
  table lacks (or a table entry the README no longer has), naming it and saying to add it here.
* :func:`test_a_newcomer_walks_the_readme` (integration, slow) writes a settings file with free
  ports for everything, starts a "hospital" PACS (a second Orthanc holding studies the README's pull
  query matches), runs ``make up`` from the repository root, then every command of the table through
  ``bash -c``, checks each one's exit status and output, and runs ``medimg fl down`` and ``make down``
  in ``finally`` whatever happened; no process of the walk is left running.

How the walk finds ``medimg``: README.md runs ``.venv/bin/medimg`` from the repository root; the walk
runs this interpreter's ``medimg`` script (``Path(sys.executable).with_name("medimg")``), which is
``.venv/bin/medimg`` when the tests run from the checkout's ``.venv`` (``make test``, CI). ``make up``
and ``make down`` run ``make -C ROOT`` with ``MEDIMG_CONFIG`` naming the walk's settings file (how
``medimg`` finds its settings: ``--config`` or ``MEDIMG_CONFIG``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from medimg_hub.db import make_engine
from medimg_hub.delivery.models import DeliveryStatus
from medimg_hub.delivery.outbox import DeliveryRecord, Outbox
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port, port_in_use
from medimg_hub.settings import (
    DEFAULT_DATASETS, DatasetSettings, DemoSettings, DestinationSettings, FederationSettings, HubSettings,
    MlflowSettings, PacsSettings, PlatformSettings, QueueSettings, ReceiverSettings, RemoteSettings, Settings,
    TasksSettings, WebhookSettings, dump_settings, load_settings,
)
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume
from tests.hub.test_external_pacs import hospital_pacs
from tests.series_factory import small_ct_series

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: What the walk runs for ``.venv/bin/medimg`` (see the module's docstring).
MEDIMG = ".venv/bin/medimg"


# --- reading README.md -------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    """``line`` without a shell comment: from a ``#`` outside quotes that starts a word."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks of ``text``, in order: one per line, comments stripped,
    ``&&`` chains kept as one command, empty lines left out."""
    commands: list[str] = []
    in_bash = False
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            in_bash = not in_bash and fence[3:].strip() == "bash"
            continue
        if in_bash and (command := _strip_comment(line).strip()):
            commands.append(command)
    return commands


# --- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One README command and how the walk runs it.

    Attributes
    ----------
    readme
        The command as README.md writes it (comment stripped).
    substitutions
        ``(README text, what the walk puts there)`` pairs, applied in order with ``str.replace``;
        the second item is a template filled from the walk's values (``{medimg}``, ``{root}``,
        ``{task_id}``, ...: :class:`Walk`). Everything else runs as written.
    exit_status
        What the README says the command exits with.
    expect
        Phrases (templates, as above) its output (stdout and stderr) must hold.
    capture
        A regular expression searched in its output (multi-line); its named groups become walk values
        for later commands (``TASK_ID`` from ``tasks list``, ...).
    before
        The name of a :class:`Walk` method that waits for what the command needs (with a deadline).
    env
        Extra environment variables (templates) for this command.
    timeout_s
        Seconds the command may take.
    why
        Why the walk runs it where it does or the way it does, when that is not obvious.
    """

    readme: str
    substitutions: tuple[tuple[str, str], ...] = ()
    exit_status: int = 0
    expect: tuple[str, ...] = ()
    capture: str = ""
    before: str = ""
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 120.0
    why: str = ""


#: Every ``.venv/bin/medimg`` runs as this interpreter's ``medimg`` script (the module's docstring says why).
_MEDIMG = ((MEDIMG, "{medimg}"),)

#: Every command of README.md's ```bash blocks, in the order the walk runs them (README order, except
#: where a command needs what a later one makes: each such move says why).
COMMANDS: tuple[Command, ...] = (
    Command("make up", (("make up", "make -C {root} up"),), timeout_s=600,
            expect=("PACS (Orthanc + DICOMweb) started", "Task queue broker (Redis) started",
                    "MLflow tracking server + model registry started", "DICOM receiver",
                    "Delivery worker", "JupyterHub (log in here", "Demo sites loaded: 3 sites, 6 studies",
                    "Pipeline organ-segmentation: 6 runs submitted, 6 waiting for review",
                    "Log in at http://127.0.0.1:{hub_port}/", "engineer1"),
            why="[demo] studies_per_site = 2 keeps training and the pipeline short; with 1, a site's one study is "
                "its hold-out and the site has nothing to train on in `fl run`"),
    Command("make test", (("make test", "make -C {root} test"),), timeout_s=300,
            env=(("PYTEST_ADDOPTS", "-p no:cacheprovider tests/test_readme.py::test_every_readme_command_is_in_the_table"),),
            expect=("lint-imports", "Contracts: ", "1 passed"),
            why="bootstrap, lint-imports and pytest as `make test` runs them, pytest limited (PYTEST_ADDOPTS) to this "
                "file's table test: the whole suite is what CI's `make test` runs, this walk included"),
    Command(f"{MEDIMG} tasks list", _MEDIMG,
            expect=("organ-segmentation", "waiting_review", "segment=succeeded", "review=waiting_review"),
            capture=r"^(?P<task_id>\S+)\s+organ-segmentation\s+waiting_review"),
    Command(f"{MEDIMG} tasks show TASK_ID", (*_MEDIMG, ("TASK_ID", "{task_id}")),
            expect=("task {task_id}: organ-segmentation", "seg_sop_instance_uids", "sr_sop_instance_uids",
                    "executed_notebook", "mlflow_run_id", "model_version"),
            capture=r"job (?P<job_id>\S+) stage review: waiting_review"),
    Command(f"{MEDIMG} tasks decide JOB_ID accepted --actor dr-demo", (*_MEDIMG, ("JOB_ID", "{job_id}")),
            expect=("{job_id}: accepted by dr-demo",)),
    Command(f"{MEDIMG} deliveries list --pending", _MEDIMG, before="first_attempt_failed",
            expect=("webhook", "ris", "pending", "attempts 1", "job {job_id} (accepted)", "last error:"),
            why="moved up from \"Results out\": it lists the decision's webhook while it waits for its second "
                "attempt (the webhook's URL is down; backoff 60 s)"),
    Command(f"{MEDIMG} pipelines list", _MEDIMG,
            expect=("organ-segmentation", "stage segment (auto, queue segmentation)", "stage review (manual")),
    Command(f'{MEDIMG} tasks submit organ-segmentation --query "InstitutionName=Northfield General Hospital (synthetic)"',
            _MEDIMG, expect=("queued", "study {site_a_study}")),
    Command(f"{MEDIMG} fl up && {MEDIMG} fl run && {MEDIMG} fl down",
            ((f"{MEDIMG} fl", "{medimg} fl"),), timeout_s=600,
            expect=("superlink", "fleet-gateway", "supernode-site-a", "federated run started: 1 rounds", "[ROUND 1",
                    "aggregate_train: Received 3 results and 0 failures", "federated run finished", "federation stopped"),
            why="[federation] rounds = 1 and the three demo datasets (trial-7 has no institution)"),
    Command(f"{MEDIMG} import ~/delivery/ collaborator.zip /media/cdrom/DICOMDIR --dataset site-a",
            (*_MEDIMG, ("~/delivery/", "{work}/delivery/"), (" collaborator.zip", " {work}/collaborator.zip"),
             ("/media/cdrom/DICOMDIR", "{work}/cdrom/DICOMDIR")),
            expect=("3 studies, 3 series: ", "0 already present, 0 files skipped")),
    Command(f"{MEDIMG} datasets list", _MEDIMG,
            expect=("site-a", "grants  read: engineers, site-a", "trial-7")),
    Command("storescu -aet CT01 -aec MEDIMG 127.0.0.1 11112 study/*.dcm",
            (("11112", "{receiver_port}"), ("study/*.dcm", "{work}/study/*.dcm")),
            why="moved up from \"Images in\" (before `datasets unassigned`): the receiver has no [[routes]], so "
                "the study it receives is in no dataset"),
    Command(f"{MEDIMG} datasets unassigned", _MEDIMG, exit_status=1, before="received_study_stored",
            expect=("{received_study}", "1 studies in no dataset")),
    Command(f'{MEDIMG} pacs pull --from hospital --query "PatientID=RES*" --query "StudyDate=20240101-20241231" '
            "--dataset trial-7", _MEDIMG,
            expect=("from hospital into trial-7, de-identified", "2 of 2 studies pulled into trial-7"),
            capture=r"^pull (?P<pull_job>\S+): from hospital"),
    Command(f"{MEDIMG} pacs pull --resume JOB_ID", (*_MEDIMG, ("JOB_ID", "{pull_job}")),
            expect=("pull {pull_job}: from hospital into trial-7", "2 of 2 studies pulled into trial-7")),
    Command(f'{MEDIMG} datasets create liver-lesions --description "Liver lesion cohort"', _MEDIMG,
            expect=("dataset liver-lesions created",)),
    Command(f'{MEDIMG} datasets rule add liver-lesions --query "StudyDescription=*LIVER*" --query Modality=CT',
            _MEDIMG, expect=("1 studies added, 0 moved from other datasets",),
            why="the received study (StudyDescription CT LIVER) is the one that matches"),
    Command(f"{MEDIMG} datasets grant liver-lesions engineers read", _MEDIMG,
            expect=("engineers may read liver-lesions",)),
    Command(f"{MEDIMG} datasets list", _MEDIMG,
            expect=("Liver lesion cohort", "grants  read: engineers", "StudyDescription=*LIVER*&Modality=CT")),
    Command(f"{MEDIMG} deliveries retry 42", (*_MEDIMG, ("42", "{delivery_id}")), before="delivery_failed",
            expect=("{delivery_id}: pending (webhook ris), due now",)),
)


def test_every_readme_command_is_in_the_table() -> None:
    """README.md's commands and :data:`COMMANDS` are the same set."""
    differences = _differences(README.read_text(encoding="utf-8"))
    assert not differences, "\n".join(differences)


def test_a_command_added_to_the_readme_fails_the_table_check() -> None:
    """The check can fail: a new command in a ```bash block is named, with what to do."""
    text = README.read_text(encoding="utf-8").replace(
        "```bash\n.venv/bin/medimg deliveries list --pending",
        "```bash\n.venv/bin/medimg deliveries purge --older-than 30d   # a new command\n"
        ".venv/bin/medimg deliveries list --pending", 1)
    assert _differences(text) == ["README.md runs `.venv/bin/medimg deliveries purge --older-than 30d`, which "
                                  "tests/test_readme.py's COMMANDS lacks: add it there (how the walk runs it, its "
                                  "exit status and output)"]


def test_the_table_changes_only_what_its_commands_hold() -> None:
    """Each substitution replaces text its README command holds (a README edit cannot make one a silent
    no-op), and each ``before`` names a step of :class:`Walk`."""
    for command in COMMANDS:
        missing = [text for text, _ in command.substitutions if text not in command.readme]
        assert not missing, f"`{command.readme}` holds no {missing}: update its substitutions in COMMANDS"
        assert not command.before or callable(getattr(Walk, command.before, None)), command.before


def test_commands_are_read_as_a_shell_reads_them() -> None:
    """Comments go (not a ``#`` inside quotes or a word), ``&&`` chains stay one command, other blocks are ignored."""
    text = ("```bash\nmake up   # starts\n\na && b  # both\necho 'x # y' v#w\n```\n"
            "```python\nimport os  # not a command\n```\n```\nnot bash\n```\n")
    assert readme_commands(text) == ["make up", "a && b", "echo 'x # y' v#w"]


def _differences(text: str) -> list[str]:
    """What differs between the README ``text``'s commands and the table, one sentence each."""
    in_readme, in_table = set(readme_commands(text)), {c.readme for c in COMMANDS}
    return ([f"README.md runs `{c}`, which tests/test_readme.py's COMMANDS lacks: add it there (how the walk runs it, "
             "its exit status and output)" for c in sorted(in_readme - in_table)]
            + [f"tests/test_readme.py's COMMANDS has `{c}`, which README.md no longer runs: remove it"
               for c in sorted(in_table - in_readme)])


# --- the walk ----------------------------------------------------------------------------------

#: The hospital's (synthetic) studies: (PatientID, StudyDate). The README's pull query (PatientID=RES*,
#: StudyDate in 2024) matches the first two only.
HOSPITAL_STUDIES = (("RES001", dt.date(2024, 3, 1)), ("RES002", dt.date(2024, 11, 30)),
                    ("RES003", dt.date(2023, 6, 1)), ("OTH001", dt.date(2024, 5, 5)))
#: The webhook's second attempt comes this long (times a jitter in [0.5, 1]) after its first failed.
WEBHOOK_BACKOFF_S = 60.0


@dataclass
class Walk:
    """The newcomer's platform while the walk runs: its settings, files, and the values the README's
    placeholders stand for (filled as commands print them)."""

    settings: Settings
    work: Path
    values: dict[str, str]
    env: dict[str, str]
    #: Every command the walk ran, with its exit status, time and output (kept with the walk's state).
    transcript: Path
    timings: list[tuple[str, float]] = field(default_factory=list)

    def shell(self, line: str, *, timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, str]:
        """``bash -c LINE`` from the repository root; exit status and output (stdout, then stderr, together)."""
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", line], cwd=ROOT, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        self.timings.append((line, time.monotonic() - started))
        with self.transcript.open("a", encoding="utf-8") as out:
            out.write(f"$ {line}\n{proc.stdout}[exit status {proc.returncode}, {self.timings[-1][1]:.1f} s]\n\n")
        return proc.returncode, proc.stdout

    def stop(self, line: str) -> tuple[int, str]:
        """Run a clean-up ``line``; an exception (a timeout) becomes exit status -1 with its text."""
        try:
            return self.shell(line, timeout_s=300)
        except Exception as exc:  # noqa: BLE001 - the next clean-up step must run
            return -1, f"{type(exc).__name__}: {exc}"

    def run(self, command: Command) -> None:
        """Run one table entry as the table says and check its exit status and output."""
        if command.before:
            getattr(self, command.before)()
        line = command.readme
        for readme_text, ours in command.substitutions:
            line = line.replace(readme_text, ours.format(**self.values))
        env = {name: value.format(**self.values) for name, value in command.env}
        status, out = self.shell(line, timeout_s=command.timeout_s, env=env)
        said = f"`{line}` (README: `{command.readme}`) exited {status}:\n{out[-4000:]}"
        assert status == command.exit_status, said
        for phrase in command.expect:
            assert phrase.format(**self.values) in out, f"no {phrase.format(**self.values)!r} in the output of {said}"
        if command.capture:
            found = re.search(command.capture, out, re.MULTILINE)
            assert found, f"no match of {command.capture!r} in the output of {said}"
            self.values.update(found.groupdict())

    def _wait(self, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
            time.sleep(0.5)

    def _webhook_delivery(self) -> DeliveryRecord | None:
        engine = make_engine(self.settings.database_url)
        try:
            records = Outbox(engine).list_deliveries(job_id=self.values["job_id"])
        finally:
            engine.dispose()
        return next((r for r in records if r.kind.value == "webhook"), None)

    def first_attempt_failed(self) -> None:
        """The decision's webhook delivery failed its first attempt (its URL is down) and waits."""
        def failed_once() -> bool:
            record = self._webhook_delivery()
            return record is not None and record.attempts >= 1

        self._wait("the webhook delivery's first attempt", failed_once, 60)
        record = self._webhook_delivery()
        assert record is not None and record.status.value == "pending", record
        self.values["delivery_id"] = str(record.id)

    def delivery_failed(self) -> None:
        """The webhook delivery gave up (max_attempts = 2): ``deliveries retry`` has a failed delivery."""
        self._wait("the webhook delivery to give up", lambda: getattr(self._webhook_delivery(), "status", None)
                   is DeliveryStatus.FAILED, WEBHOOK_BACKOFF_S + 60)

    def received_study_stored(self) -> None:
        """The receiver has stored every instance storescu sent in the PACS (it acknowledges once on disk)."""
        client = pacs_connection(self.settings).client()
        uid, count = self.values["received_study"], len(list((self.work / "study").glob("*.dcm")))
        self._wait("the received study in the PACS", lambda: len(client.search_for_instances(uid)) == count, 60)


def _dicom_files(series: list[Dataset], folder: Path) -> list[Path]:
    """``series`` written to ``folder`` as ``IM<n>.dcm``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IM{i:04d}.dcm" for i in range(len(series))]
    for ds, path in zip(series, paths):
        ds.save_as(path, enforce_file_format=True)
    return paths


def _newcomers_files(work: Path) -> str:
    """The README's example inputs under ``work``: a delivery folder, a zip, a DICOMDIR (``import``) and a
    study to send with storescu (StudyDescription CT LIVER, from an institution no dataset names).
    Returns the sent study's StudyInstanceUID."""
    _dicom_files(small_ct_series(seed=701), work / "delivery" / "series1")
    with zipfile.ZipFile(work / "collaborator.zip", "w") as archive:
        for i, ds in enumerate(small_ct_series(seed=702)):
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            archive.writestr(f"collaborator/{i}.dcm", buffer.getvalue())
    fileset = FileSet()
    for ds in small_ct_series(seed=703):
        fileset.add(ds)
    fileset.write(work / "cdrom")
    patient = SyntheticPatient("RCV001", "RECEIVED^ONE", generate_uid(), study_description="CT LIVER",
                               institution_name="Receiver Test Site")
    series = ct_series_from_volume(Volume(np.full((4, 16, 16), 40, np.int16), (2.0, 1.0, 1.0)), patient)
    _dicom_files(series, work / "study")
    return patient.study_instance_uid


def _hospital_with_studies(folder: Path) -> OrthancServer:
    """The "hospital" PACS of ``[[remotes]]``: a second Orthanc, started and holding :data:`HOSPITAL_STUDIES`."""
    hospital = hospital_pacs(folder)
    hospital.start()
    for patient_id, date in HOSPITAL_STUDIES:
        patient = SyntheticPatient(patient_id, f"DOE^{patient_id}", generate_uid(), accession_number="A" + patient_id,
                                   study_date=date, institution_name="St Elsewhere Hospital",
                                   patient_birth_date="19700101")
        hospital.client().store_instances(
            ct_series_from_volume(Volume(np.full((3, 16, 16), 40, np.int16), (2.0, 1.0, 1.0)), patient))
    return hospital


def _consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (the federation's SuperNodes)."""
    while True:
        first = free_port()
        if first + count <= 65535 and not any(port_in_use("127.0.0.1", first + i) for i in range(1, count)):
            return first


def _private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def _newcomers_settings(root: Path, hospital: OrthancServer) -> Settings:
    """``root/medimg.toml``: every port free, state under ``root``, the demo small, a receiver, the
    hospital as a remote, a dataset ``trial-7``, and the demo datasets exporting to a PACS and announcing
    final decisions to a webhook, both down, with two attempts each. (``tasks decide`` from the command line
    stores no reviewed SEG or SR, so there is nothing to push: its decision's one delivery is the webhook's.)"""
    creds = hospital.credentials()
    down_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    demo = tuple(dataclasses.replace(d, export_to=("hospital-pacs",), webhook="ris") for d in DEFAULT_DATASETS)
    built = Settings(
        platform=PlatformSettings(var_dir=root / "var", start_timeout_s=60.0),
        pacs=PacsSettings(http_port=free_port()),
        mlflow=MlflowSettings(port=free_port(), backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
                              artifacts_dir=root / "mlflow-artifacts"),
        queue=QueueSettings(redis_port=free_port()),
        tasks=TasksSettings(database_url=f"sqlite:///{root / 'var' / 'platform.db'}"),
        hub=dataclasses.replace(HubSettings(), port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                                platform_api_port=free_port(), mlflow_proxy_port=free_port(), spawner="shared",
                                homes_dir=root / "homes"),
        datasets=(*demo, DatasetSettings("trial-7", "A collaborator's trial (pulled, de-identified)", "")),
        demo=DemoSettings(studies_per_site=2),
        federation=FederationSettings(superlink_port=free_port(), fleet_gateway_port=free_port(),
                                      first_node_port=_consecutive_free_ports(3),
                                      datasets=tuple(d.name for d in DEFAULT_DATASETS), rounds=1,
                                      round_timeout_s=300.0, run_timeout_s=540.0),
        receiver=ReceiverSettings(port=free_port(), senders=("CT01@127.0.0.1",)),
        remotes=(RemoteSettings("hospital", hospital.dicomweb_url, "basic", _private_file(
            root / "hospital.json", json.dumps({"username": creds.username, "password": creds.password}))),),
        destinations=(DestinationSettings(name="hospital-pacs", url=f"{down_url}/dicom-web", max_attempts=2,
                                          backoff_s=WEBHOOK_BACKOFF_S, max_backoff_s=WEBHOOK_BACKOFF_S, timeout_s=5.0),),
        webhooks=(WebhookSettings(name="ris", url=f"{down_url}/hooks/medimg",
                                  secret_file=_private_file(root / "ris.key", "walk-secret"), max_attempts=2,
                                  backoff_s=WEBHOOK_BACKOFF_S, max_backoff_s=WEBHOOK_BACKOFF_S, timeout_s=5.0),),
    )
    return load_settings(dump_settings(built, root / "medimg.toml"))


def _site_a_study(settings: Settings) -> str:
    """The demo study of site A (InstitutionName Northfield General Hospital (synthetic))."""
    manifest = json.loads((settings.var_dir / "demo" / "manifest.json").read_text())
    site = next(p["name"] for p in manifest["profiles"] if p["institution_name"].startswith("Northfield"))
    return next(s["study_instance_uid"] for s in manifest["studies"] if s["site"] == site)


def _walk_processes(root: Path) -> list[str]:
    """Command lines of running processes that name a path under ``root`` (the walk's settings or state)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
        except OSError:
            continue
        if str(root) in cmdline and entry.name != str(os.getpid()):
            found.append(f"{entry.name}: {cmdline.replace(chr(0), ' ')[:200]}")
    return found


@pytest.fixture
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """The newcomer's settings and files, and a hospital PACS; afterwards ``medimg fl down`` and ``make down``
    (whatever the walk did), then the hospital stops, and no process of the walk may be left."""
    root = tmp_path_factory.mktemp("readme")
    hospital = _hospital_with_studies(root / "hospital")
    try:
        settings = _newcomers_settings(root, hospital)
        received = _newcomers_files(root / "work")
        medimg = str(Path(sys.executable).with_name("medimg"))
        path = os.pathsep.join([str(ROOT), str(ROOT / "hub"), str(ROOT / "federated"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "MEDIMG_CONFIG": str(settings.config_file), "PYTHONPATH": path}
        values = {"root": str(ROOT), "medimg": medimg, "work": str(root / "work"), "received_study": received,
                  "hub_port": str(settings.hub.port), "receiver_port": str(settings.receiver.port)}
        walk = Walk(settings, root / "work", values, env, root / "transcript.txt")
        try:
            yield walk
        finally:  # each step even when the one before failed: `fl run` failing skips the chain's `fl down`
            fl_status, fl_out = walk.stop(f"{medimg} fl down")
            down_status, down_out = walk.stop(f"make -C {ROOT} down")
            status_out = walk.stop(f"{medimg} status")[1]
            print("\n".join(f"{seconds:7.1f} s  {line}" for line, seconds in walk.timings))
            print(f"{sum(seconds for _, seconds in walk.timings):7.1f} s  in all; transcript: {walk.transcript}")
    finally:
        hospital.stop()
    assert fl_status == 0, fl_out
    assert down_status == 0, down_out
    assert "running (pid" not in status_out, status_out
    assert not _walk_processes(root), "left running after make down:\n" + "\n".join(_walk_processes(root))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_newcomer_walks_the_readme(walk: Walk) -> None:
    """``make up``, then every README command in :data:`COMMANDS` order: each exits as the README says and
    prints what it promises."""
    for command in COMMANDS:
        walk.run(command)
        if command.readme == "make up":
            walk.values["site_a_study"] = _site_a_study(walk.settings)
