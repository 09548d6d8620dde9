"""The operator's settings: one TOML file (``medimg.toml``), every key documented and optional.

:mod:`.sections` holds the sections and the loader/writer, :mod:`.federation` the
``[federation]`` section, :mod:`.receiver` the ``[receiver]`` section and ``[[routes]]``,
:mod:`.destinations` ``[[destinations]]``, ``[[webhooks]]`` and ``[deliveries]``. Everything is
re-exported here: ``from medimg_hub.settings import Settings, load_settings``. May import: ``medimg_kernel.errors`` only.
"""

from medimg_hub.settings.destinations import DeliverySettings, DestinationSettings, WebhookSettings
from medimg_hub.settings.federation import FederationSettings, validate_federation
from medimg_hub.settings.receiver import ReceiverSettings, RouteSettings
from medimg_hub.settings.remotes import RemoteSettings
from medimg_hub.settings.sections import (CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE, DEFAULT_DATASETS, MLFLOW_PREFIX,
                                          REPO_ROOT, DatasetSettings, DemoSettings, HubSettings, MlflowSettings,
                                          PacsSettings, PipelinesSettings, PlatformSettings, QueueSettings,
                                          ReviewSettings, Settings, TasksSettings, dump_settings, load_settings)

__all__ = [
    "CONFIG_ENV_VAR", "DEFAULT_CONFIG_FILE", "DEFAULT_DATASETS", "MLFLOW_PREFIX", "REPO_ROOT", "DatasetSettings",
    "DeliverySettings", "DemoSettings", "DestinationSettings", "FederationSettings", "HubSettings", "MlflowSettings",
    "PacsSettings", "PipelinesSettings", "PlatformSettings", "QueueSettings", "ReceiverSettings", "RemoteSettings", "ReviewSettings", "RouteSettings", "Settings",
    "TasksSettings", "WebhookSettings", "dump_settings",
    "load_settings", "validate_federation",
]
