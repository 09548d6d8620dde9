"""``medimg fl``: federated training across the demo sites with Flower, on this machine.

A SuperLink and one SuperNode per demo site run as separate processes on loopback (TLS, node
keys); each site trains on its own data (its folder of DICOM files under ``var/demo/<site>``,
read through ``medimg_kernel``'s folder client) and the ServerApp tracks every round in the
platform's MLflow and registers the result as ``organ-segmentation@federated``.
"""

from __future__ import annotations

from pathlib import Path

import click

from medimg_kernel.errors import ConfigurationError

from .settings import Settings


def _federation(settings: Settings):  # -> medimg_hub.federation.Federation
    from .demo import DemoManifest
    from .federation import platform_federation

    manifest_file = settings.var_dir / "demo" / "manifest.json"
    if not manifest_file.exists():
        raise ConfigurationError(f"no demo sites at {manifest_file}: run `medimg up` first")
    manifest = DemoManifest.from_file(manifest_file)
    sites = {site: {"folder": str(settings.var_dir / "demo" / site)} for site in manifest.sites}
    return platform_federation(settings.var_dir, sites)


@click.group()
def fl() -> None:
    """Federated training with Flower across the demo sites (SuperLink + one SuperNode per site)."""


@fl.command("up")
@click.pass_obj
def fl_up_command(settings: Settings) -> None:
    """Start the SuperLink and the sites' SuperNodes (idempotent) and wait until they are online."""
    from .federation import fl_up

    for name, url in fl_up(_federation(settings)).items():
        click.echo(f"{name:<24} {url}")


@fl.command("run")
@click.option("--rounds", default=3, show_default=True, help="Server rounds.")
@click.option("--local-epochs", default=1, show_default=True, help="Epochs each site trains per round.")
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--dp", type=click.Choice(["none", "server", "client"]), default="none", show_default=True,
              help="Differential privacy (fixed clipping, Gaussian noise); see federated/README.md.")
@click.option("-c", "--run-config", "extra", multiple=True, help="Further run-config KEY=VALUE (federated/pyproject.toml).")
@click.pass_obj
def fl_run_command(settings: Settings, rounds: int, local_epochs: int, strategy: str, dp: str,
                   extra: tuple[str, ...]) -> None:
    """Run the Flower app on the started federation; metrics and the model go to the platform's MLflow."""
    from .federation import fl_run

    config: dict[str, object] = {"num-server-rounds": rounds, "local-epochs": local_epochs, "strategy": strategy,
                                 "dp": dp, "tracking-uri": settings.mlflow_tracking_uri}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--run-config")
        config[key] = _typed(value)
    log_file: Path = fl_run(_federation(settings), config)
    click.echo(f"federated run finished; Flower's log: {log_file}; runs and model at {settings.mlflow_tracking_uri}")


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
    """Stop every federation process (SuperLink, SuperNodes and what they spawned)."""
    from .federation import fl_down

    fl_down(_federation(settings))
    click.echo("federation stopped")
