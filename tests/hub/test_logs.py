"""No DICOM UIDs in log lines: pseudonyms that stay the same for one UID, and nothing else touched."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from medimg_hub.servers.logs import KEY_FILE_ENV, UID, RedactingFormatter, load_key, redact

STUDY = "1.2.826.0.1.3680043.8.498.10394412345123451234512345"
SERIES = "1.2.826.0.1.3680043.8.498.10394412345123451234512346"


def test_uids_become_stable_keyed_pseudonyms_and_nothing_else_changes(tmp_path: Path) -> None:
    key = load_key(tmp_path / "key.json")
    line = f"503 GET /services/platform/dicom-web/studies/{STUDY}/series/{SERIES} from 127.0.0.1 (v1.2.3)"
    out = redact(line, key)
    assert STUDY not in out and SERIES not in out
    assert out.count("uid:") == 2 and "127.0.0.1" in out and "v1.2.3" in out
    assert redact(STUDY, key) == redact(STUDY, load_key(tmp_path / "key.json"))  # same key file, same pseudonym
    assert redact(STUDY, key) != redact(SERIES, key)
    assert redact(STUDY, key) != redact(STUDY, load_key(tmp_path / "other.json"))  # another installation
    assert oct((tmp_path / "key.json").stat().st_mode & 0o777) == "0o600"
    assert not UID.search("2.13.0 and 10.0.0.1 and 3.11.7 and 2.25.1")
    uuid_uid = "2.25.329800735698586629295641978511506172918"  # UUID-derived, as highdicom and pydicom make them
    assert uuid_uid not in redact(f"SEG {uuid_uid} stored", key)


def test_a_formatted_traceback_is_redacted_too(tmp_path: Path) -> None:
    formatter = RedactingFormatter(logging.Formatter("%(message)s"), load_key(None))
    try:
        raise LookupError(f"no study {STUDY}")
    except LookupError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", (SERIES,), sys.exc_info())
    text = formatter.format(record)
    assert "LookupError" in text and STUDY not in text and SERIES not in text


def test_a_programs_output_is_redacted_and_its_signals_and_status_pass(tmp_path: Path) -> None:
    env = {KEY_FILE_ENV: str(tmp_path / "key.json"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "medimg_hub.servers.logs", "--", "sh", "-c",
                           f"echo 'error: 503 GET /studies/{STUDY}'; echo 'to stderr {SERIES}' >&2; exit 3"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 3
    assert STUDY not in done.stdout and "error: 503 GET /studies/uid:" in done.stdout
    assert SERIES not in done.stderr and "to stderr uid:" in done.stderr
    child = subprocess.Popen([sys.executable, "-m", "medimg_hub.servers.logs", "--", "sleep", "60"], env=env)
    try:
        import time

        time.sleep(1.0)
        child.terminate()  # forwarded to sleep, which dies of it
        assert child.wait(10) != 0
    finally:
        child.kill()
