"""The platform's services in start order; ``medimg up/down/status`` walk this list."""

from __future__ import annotations

import sys
from typing import Protocol

from medimg_hub.delivery.worker import READY_TEXT as DELIVERY_READY
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pipeline.broker import RedisBroker
from medimg_hub.servers.process import ManagedProcess
from medimg_hub.settings import Settings, dump_settings
from medimg_hub.tracking.server import MlflowServer


class Service(Protocol):
    name: str
    process: ManagedProcess

    def start(self) -> bool: ...

    def stop(self) -> bool: ...


class CommandService:
    """A ``medimg`` subcommand run as a managed background process (dispatcher, workers)."""

    def __init__(self, settings: Settings, name: str, args: list[str], *, ready_text: str | None = None) -> None:
        self.settings = settings
        self.name = name
        config_file = settings.config_file or dump_settings(settings, settings.var_dir / "run" / "settings.toml")
        argv = [sys.executable, "-m", "medimg_hub.cli.main", "--config", str(config_file), "--verbose", *args]
        self.ready_text = ready_text
        self.process = ManagedProcess(name, argv, settings.var_dir, ready=self._ready, url="(queue)",
                                      marker=" ".join(args))
        self._log_offset = 0

    def _ready(self) -> bool:
        if self.ready_text is None:
            return True
        try:
            with open(self.process.log_file, "rb") as fh:
                fh.seek(self._log_offset)
                return self.ready_text.encode() in fh.read()
        except FileNotFoundError:
            return False

    def start(self) -> bool:
        if self.process.pid() is not None:
            return False
        self._log_offset = self.process.log_file.stat().st_size if self.process.log_file.exists() else 0
        return self.process.start(max(self.settings.platform.start_timeout_s, 60.0))

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)


def queue_services(settings: Settings) -> list[CommandService]:
    """The dispatcher and one worker per configured worker group."""
    workers = [CommandService(settings, f"worker-{group}", ["worker", group], ready_text=" ready.")
               for group in settings.queue.worker_groups]
    return [CommandService(settings, "dispatcher", ["dispatcher"]), *workers]


def platform_services(settings: Settings, *, hub: bool = True) -> list[Service]:
    """Every service ``medimg up`` starts, dependencies first; the hub (which runs the platform
    API as its managed service) last. ``hub=False`` leaves it out (pipelines without logins)."""
    services: list[Service] = [RedisBroker(settings), MlflowServer(settings), *queue_services(settings)]
    if not settings.pacs.url:  # the embedded Orthanc; a PACS by URL is the hospital's to run
        services.insert(0, OrthancServer(settings))
    if any(d.export_to or d.webhook for d in settings.datasets):  # results leave the platform: after the PACS
        services.append(CommandService(settings, "deliveries", ["deliveries", "run"], ready_text=DELIVERY_READY))
    if settings.receiver.port:  # the DICOM receiver stores into the PACS: after it
        services.insert(1 if not settings.pacs.url else 0,
                        CommandService(settings, "dicom-receiver", ["receiver"], ready_text="DICOM receiver listening"))
    if hub:
        from medimg_hub.servers.jupyterhub import JupyterHubServer

        services.append(JupyterHubServer(settings))
    return services
