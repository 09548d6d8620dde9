"""Flower's SuperExec with run tokens kept off command lines.

Flower 1.41's SuperExec (started by the SuperLink, and by every SuperNode, in ``subprocess``
isolation) launches each ServerApp and ClientApp as ``flwr-serverapp --serverappio-api-address
A --token <hex>``. A command line is readable by every account on the machine
(``/proc/PID/cmdline``), and whoever holds a run's token can act as that app on the runtime API
(pull the run's messages, push results). The apps also accept ``--token-file``; this launcher
hands them the token in an anonymous in-memory file (``memfd_create``) that the child inherits as
an open descriptor and opens as ``/dev/fd/N``: the token is never on a command line and never on
disk, and ``/proc/PID/fd`` of a process is open only to its own account (and root).

``python -m medimg_hub.federation.superexec ARGS`` is ``flower-superexec ARGS`` with this one
change. :class:`~medimg_hub.federation.deployment.Federation` puts a ``flower-superexec`` shim
that runs it ahead of Flower's own on the ``PATH`` of the processes it starts (the SuperLink and
the SuperNodes start their SuperExec by that name). Flower's launcher is replaced, not wrapped,
because its arguments are what leaks; ``tests/federated/test_cli.py`` scans every process's
command line during a real run, so a Flower upgrade that changes the launcher fails there.
"""

from __future__ import annotations

import os
import subprocess
import sys

from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult


def token_file(token: str) -> int:
    """An anonymous in-memory file holding ``token``: its descriptor (close-on-exec; pass it on
    explicitly with ``pass_fds``)."""
    fd = os.memfd_create("flwr-run-token", os.MFD_CLOEXEC)
    os.write(fd, token.encode("ascii"))
    return fd


def launch(_executor: SubprocessExecutor, spec: ExecutionSpec) -> LaunchResult:
    """``SubprocessExecutor.launch`` with ``--token-file /dev/fd/N`` in place of ``--token TOKEN``.

    Everything else (TLS arguments, ``--parent-pid``, output suppression) is as Flower's own.
    """
    fd = token_file(spec.token)
    try:
        args = [TASK_TYPE_TO_COMMAND[spec.task_type], TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
                spec.runtime_api_address, "--token-file", f"/dev/fd/{fd}"]
        if spec.insecure:
            args.append("--insecure")
        elif spec.root_certificates_path is not None:
            args.extend(["--root-certificates", spec.root_certificates_path])
        if spec.parent_pid is not None:
            args.extend(["--parent-pid", str(spec.parent_pid)])
        if spec.runtime_dependency_install:
            args.append("--allow-runtime-dependency-installation")
        output = subprocess.DEVNULL if spec.suppress_output else None
        subprocess.Popen(args, pass_fds=(fd,), stdout=output, stderr=output)  # noqa: S603 - Flower's own app
    finally:
        os.close(fd)  # the child holds its own copy
    return LaunchResult.accepted()


def main() -> None:
    """Run Flower's SuperExec with :func:`launch` as its subprocess launcher."""
    from flwr.supercore.cli import flower_superexec

    SubprocessExecutor.launch = launch  # type: ignore[method-assign]
    flower_superexec()


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["token_file", "launch", "main"]
