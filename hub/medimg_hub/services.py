"""The platform's services in start order; ``medimg up/down/status`` walk this list."""

from __future__ import annotations

from typing import Protocol

from .broker import RedisBroker
from .mlflow_service import MlflowServer
from .orthanc import OrthancServer
from .process import ManagedProcess
from .settings import Settings


class Service(Protocol):
    name: str
    process: ManagedProcess

    def start(self) -> bool: ...

    def stop(self) -> bool: ...


def platform_services(settings: Settings) -> list[Service]:
    """Every service ``medimg up`` starts, dependencies first."""
    return [OrthancServer(settings), RedisBroker(settings), MlflowServer(settings)]
