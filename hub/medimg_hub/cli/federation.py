"""``medimg fl``: federated training across the platform's datasets with Flower, on this machine.

A SuperLink and one SuperNode per taking-part dataset run as separate processes on loopback
(TLS and node keys unless ``[federation]`` turns them off); each site trains on its own
dataset's studies, read from the platform PACS, and the ServerApp tracks every round in the
platform's MLflow and registers the result under ``[federation] model_alias``. Every knob is
in ``[federation]`` of ``medimg.toml``; the options of ``medimg fl run`` override it for one run.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from medimg_hub.settings import Settings
from medimg_hub.settings.federation import FEDERATION_DP_MODES, FEDERATION_STRATEGIES


@click.group()
def fl() -> None:
    """Federated training with Flower across the datasets ([federation] in medimg.toml)."""


@fl.command("up")
@click.pass_obj
def fl_up_command(settings: Settings) -> None:
    """Start the SuperLink, its Fleet gateway and the sites' SuperNodes (idempotent); wait until they are online."""
    from medimg_hub.federation.platform import fl_up

    for name, url in fl_up(settings).items():
        click.echo(f"{name:<24} {url}")


@fl.command("run")
@click.option("--rounds", type=int, help="Server rounds (default: [federation] rounds).")
@click.option("--local-epochs", type=int, help="Epochs each site trains per round (default: [federation] local_epochs).")
@click.option("--strategy", type=click.Choice(FEDERATION_STRATEGIES), help="Default: [federation] strategy.")
@click.option("--dp", type=click.Choice(FEDERATION_DP_MODES),
              help="Differential privacy (fixed clipping, Gaussian noise); default: [federation] dp.")
@click.option("-c", "--run-config", "extra", multiple=True,
              help="Further run-config KEY=VALUE (keys of [tool.flwr.app.config] in federated/pyproject.toml), "
                   "overriding [federation].")
@click.pass_obj
def fl_run_command(settings: Settings, rounds: int | None, local_epochs: int | None, strategy: str | None,
                   dp: str | None, extra: tuple[str, ...]) -> None:
    """Run the Flower app on the started federation; metrics and the model go to the platform's MLflow."""
    from medimg_hub.federation.platform import fl_run

    # The options are [federation] settings for this run; platform.run_config maps them to run-config keys.
    options = {"rounds": rounds, "local_epochs": local_epochs, "strategy": strategy, "dp": dp}
    federation = dataclasses.replace(settings.federation, **{k: v for k, v in options.items() if v is not None})
    settings = dataclasses.replace(settings, federation=federation)
    overrides: dict[str, object] = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--run-config")
        overrides[key] = _typed(value)
    click.echo(f"federated run started: {settings.federation.rounds} rounds; progress below, "
               "Flower's whole log in var/log/flwr-run.log")
    log_file: Path = fl_run(settings, overrides, on_line=_progress)
    click.echo(f"federated run finished; Flower's log: {log_file}; runs and model at {settings.mlflow_tracking_uri}")


#: Lines of Flower's stream shown in the terminal: round starts, what came back, the end, and trouble.
PROGRESS = re.compile(r"\[ROUND \d+|aggregate_(train|evaluate)|Aggregated MetricRecord|Strategy execution finished"
                      r"|ServerApp finished"
                      r"|ERROR|Exception|Traceback")


def _progress(line: str) -> None:
    if PROGRESS.search(line):
        click.echo("  " + re.sub(r"^\S*\s*:\s+", "", line.strip()))


def _typed(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


@fl.command("down")
@click.pass_obj
def fl_down_command(settings: Settings) -> None:
    """Stop every federation process (SuperLink, Fleet gateway, SuperNodes and what they spawned)."""
    from medimg_hub.federation.platform import fl_down

    fl_down(settings)
    click.echo("federation stopped")
