"""Federated vs pooled training on the demo sites, and the cost of a deployed Flower round.

``federated_dice_gap``: the demo sites (3 sites whose scanners differ: matrix, spacing, noise,
contrast; :mod:`medimg_kernel.phantom`) are written as files, one folder per site. Each site's
studies are split into train and hold-out by UID hash exactly as its ClientApp splits them.
*Pooled*: one network trained on every site's training series for ``E`` epochs
(:func:`medimg_kernel.training.train_epochs`, cosine LR). *Federated*: the Flower app in
simulation mode (:mod:`medimg_federated.simulation`; same ServerApp, FedAvg and ClientApp as a
deployment), ``E`` rounds × 1 local epoch (the same number of passes over each site's data,
cosine LR over rounds). Both are scored by mean Dice over organs (liver, spleen, kidney) on the
union of the sites' hold-out series, on their original grids. Value: federated − pooled, each
the mean over ``--repeats`` seeds (default 3). Pooled training is deterministic here (it comes out
the same for every seed); the federated runs vary by about ±0.01 Dice between seeds, and a single
run once measured −0.023, so one run is not enough to judge a 0.02 margin. Per-seed values are in
``details``.

``federated_round_overhead``: the same app deployed (SuperLink + 3 SuperNode processes on
loopback, ``flwr run``), ``R`` rounds. A round is one message per site: it evaluates the received
global model (round r−1's) on the hold-out, then trains (``medimg_federated.server_app``). For each
round r ≥ 2: round wall time = time between the MLflow logs of round r−1's and round r's
aggregated training; local compute = the slowest site's (evaluate + train) time reported by its
ClientApp in that message (``eval_time_s`` logged at step r−1, ``train_time_s`` at step r). Value:
median over rounds of (round wall − local compute) / local compute, i.e. Flower's overhead per unit
of local work. The local work is the configured one (``[federation] local_epochs`` epochs over each
site's training series, the default network), measured inside the same calls the round makes.
Round 1 is left out: it includes each site worker's first read of the site's studies; so is the
evaluate-only message after the last round (the final model's evaluation), once per run.
Before 2026-12-02 a round was two messages (train, then evaluate) and the wall time was measured
between aggregated evaluations; the work counted per round is the same.

Run, with the Flower app's package on the path:
``PYTHONPATH=federated python benchmarks/bench_federated.py [--epochs 20] [--studies-per-site 4] [--rounds 3] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from benchlib import write_result
from medimg_federated.simulation import simulate
from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.federation.deployment import APP_DIR, Federation, SiteNode
from medimg_hub.servers.process import free_port
from medimg_hub.settings.federation import FederationSettings
from medimg_kernel.federation import SiteConfig, load_site_data
from medimg_kernel.model import SegmentationModelConfig, build_network
from medimg_kernel.training import train_epochs, validate

log = logging.getLogger("bench_federated")


def _mean_dice(network: torch.nn.Module, pairs, config) -> float:  # noqa: ANN001
    scores = validate(network, pairs, config, torch.device("cpu"))
    return float(statistics.mean(scores.values()))


def _federated_run_id(uri: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("organ-segmentation-federated")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0].info.run_id


def dice_gaps(sites: dict[str, Path], epochs: int, work: Path, repeats: int) -> dict[str, object]:
    """:func:`dice_gap` with seeds 0 … repeats-1 (weight init and shuffling); the gap of the means."""
    runs = []
    for seed in range(repeats):
        torch.manual_seed(seed)
        runs.append(dice_gap(sites, epochs, work / f"seed-{seed}"))
    pooled = statistics.mean(r["pooled_dice"] for r in runs)
    federated = statistics.mean(r["federated_dice"] for r in runs)
    return {"pooled_dice": pooled, "federated_dice": federated, "gap": federated - pooled, "seeds": repeats,
            "per_seed": [{k: round(v, 4) for k, v in r.items()} for r in runs]}


def dice_gap(sites: dict[str, Path], epochs: int, work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    config = SegmentationModelConfig()
    data = {s: load_site_data(SiteConfig(s, folder=str(f)), config) for s, f in sites.items()}
    train = [p for d in data.values() for p in d.train]
    holdout = [p for d in data.values() for p in d.holdout]
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    start = time.perf_counter()
    pooled = build_network(config)
    train_epochs(pooled, train, config, epochs=epochs, device="cpu")
    pooled_s = time.perf_counter() - start
    pooled_dice = _mean_dice(pooled, holdout, config)
    log.info("pooled: %d epochs in %.0f s, Dice %.4f", epochs, pooled_s, pooled_dice)

    uri = f"sqlite:///{work / 'mlflow.db'}"
    start = time.perf_counter()
    simulate([{"site": s, "folder": str(f)} for s, f in sites.items()],
             {"num-server-rounds": epochs, "local-epochs": 1, "tracking-uri": uri, "register": False,
              "num-threads": len(__import__("os").sched_getaffinity(0)), "min-nodes": len(sites)})
    federated_s = time.perf_counter() - start
    run_id = _federated_run_id(uri)
    weights = torch.load(MlflowClient(tracking_uri=uri).download_artifacts(
        run_id, f"checkpoints/round-{epochs:03d}.pt", str(work)), weights_only=True)
    federated = build_network(config)
    federated.load_state_dict(weights)
    federated_dice = _mean_dice(federated, holdout, config)
    log.info("federated: %d rounds in %.0f s, Dice %.4f", epochs, federated_s, federated_dice)
    return {"pooled_dice": pooled_dice, "federated_dice": federated_dice, "pooled_s": pooled_s,
            "federated_simulation_s": federated_s, "train_series": len(train), "holdout_series": len(holdout)}


def round_overhead(sites: dict[str, Path], rounds: int, work: Path) -> dict[str, object]:
    uri = f"sqlite:///{work / 'mlflow-deployed.db'}"
    nodes = [SiteNode(s, {"folder": str(f)}, free_port()) for s, f in sites.items()]
    federation = Federation(work / "var", free_port(), nodes)
    try:
        federation.up()
        federation.wait_online(len(nodes))
        start = time.perf_counter()
        federation.run({"num-server-rounds": rounds, "local-epochs": FederationSettings().local_epochs,
                        "tracking-uri": uri, "register": False, "min-nodes": len(nodes)}, timeout_s=3000)
        total_s = time.perf_counter() - start
    finally:
        federation.down()
    client = MlflowClient(tracking_uri=uri)
    run_id = _federated_run_id(uri)
    ends = {m.step: m.timestamp / 1000 for m in client.get_metric_history(run_id, "train_sites_replied")}
    per_round = []
    for r in range(2, rounds + 1):
        compute = max(
            _at(client, run_id, f"{s}_eval_time_s", r - 1) + _at(client, run_id, f"{s}_train_time_s", r)
            for s in sites)
        wall = ends[r] - ends[r - 1]
        per_round.append({"round": r, "wall_s": round(wall, 2), "local_compute_s": round(compute, 2),
                          "overhead_ratio": round((wall - compute) / compute, 3)})
    return {"rounds": per_round, "deployed_total_s": round(total_s, 1), "site_workers": federation.site_workers,
            "local_epochs": FederationSettings().local_epochs}


def _at(client: MlflowClient, run_id: str, key: str, step: int) -> float:
    return next(m.value for m in client.get_metric_history(run_id, key) if m.step == step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--studies-per-site", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-gap", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="seeds averaged for the Dice gap (single runs vary ±0.02)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    command = "python benchmarks/bench_federated.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-federated-") as tmp:
        work = Path(tmp)
        manifest = generate_demo(work / "demo", n_sites=3, studies_per_site=args.studies_per_site)
        sites = {s: work / "demo" / s for s in sorted({st.site for st in manifest.studies})}
        common = {"sites": list(sites), "studies_per_site": args.studies_per_site, "model": "default config",
                  "app": str(APP_DIR.relative_to(APP_DIR.parent))}
        if not args.skip_gap:
            gap = dice_gaps(sites, args.epochs, work, args.repeats)
            write_result("federated_dice_gap", value=round(float(gap["gap"]), 4),  # type: ignore[arg-type]
                         goal=">= -0.02", unit="Dice", command=command,
                         details={**common, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in gap.items()},
                                  "epochs": args.epochs,
                                  "federated": f"FedAvg, {args.epochs} rounds x 1 local epoch, simulation mode",
                                  "definition": "mean Dice over organs on the union of site hold-outs; "
                                                "federated minus pooled, same passes over the data, "
                                                "each the mean over the seeds"})
        if not args.skip_overhead:
            over = round_overhead(sites, args.rounds, work)
            value = statistics.median(r["overhead_ratio"] for r in over["rounds"])  # type: ignore[index]
            write_result("federated_round_overhead", value=round(value, 3), goal="<= 1.2", unit="ratio",
                         command=command,
                         details={**common, **over, "definition":
                                  "(round wall time - slowest site's evaluate+train time) / that time, median "
                                  "over rounds >= 2; one message per site and round (evaluate the received "
                                  "model, then train); deployed SuperLink + Fleet gateway + 3 SuperNodes "
                                  "(+ site workers) on loopback, [federation] local_epochs"})


if __name__ == "__main__":
    main()
