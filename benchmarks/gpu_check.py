"""GPU check (issue #16 item 3): run on a machine with an NVIDIA GPU and torch's CUDA build
(``MEDIMG_TORCH=cuda scripts/bootstrap.sh``); ``benchmarks/gpu_check.sh`` is the command.

1. **Inference on CUDA vs CPU**: the same trained organ model (trained here on the synthetic demo
   sites, on the GPU), :func:`medimg_kernel.model.segment_volume` of the same held-out volumes,
   median wall time per volume on each device → ``gpu_inference_speedup`` (CPU time / CUDA time).
2. **Mixed precision**: held-out Dice per organ with ``inference_dtype="float32"`` and
   ``"bfloat16"`` (autocast) on CUDA; the platform may use AMP only where every organ's Dice moves
   by at most 0.005 → ``gpu_amp_dice_delta`` (the largest absolute change).
3. **Devices per user**: one process per GPU with ``CUDA_VISIBLE_DEVICES`` set as the hub's GPU pool
   sets it for each user's server, and one with it empty (the CPU profile): each sees only its own
   device (by UUID), the empty one none.

Without CUDA it says so and exits 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchlib import write_result

COMMAND = "bash benchmarks/gpu_check.sh"
PROBE = ("import json, torch; print(json.dumps([str(torch.cuda.get_device_properties(i).uuid) "
         "for i in range(torch.cuda.device_count())]))")


def devices_per_process() -> dict[str, list[str]]:
    """UUIDs each ``CUDA_VISIBLE_DEVICES`` value shows to a fresh process (as a user's kernel would see)."""
    seen: dict[str, list[str]] = {}
    for visible in [*(str(i) for i in range(torch.cuda.device_count())), ""]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        seen[visible or "(empty)"] = json.loads(out.stdout.strip().splitlines()[-1])
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--studies-per-site", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}): "
              "run this on a GPU machine after MEDIMG_TORCH=cuda scripts/bootstrap.sh", file=sys.stderr)
        return 2
    from medimg_kernel.client import DICOMfolderClient
    from medimg_kernel.datasets import load_training_pairs, split_holdout
    from medimg_kernel.model import SegmentationModelConfig, segment_volume
    from medimg_kernel.phantom.demo import generate_demo
    from medimg_kernel.training import train_segmentation, validate

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    manifest = generate_demo(work / "demo", n_sites=3, studies_per_site=args.studies_per_site)
    client = DICOMfolderClient(work / "demo")
    pairs = list(load_training_pairs(client, [s.study_instance_uid for s in manifest.studies]).pairs)
    train, holdout = split_holdout(pairs, 0.25)
    config = SegmentationModelConfig()
    cuda = torch.device("cuda")
    trained = train_segmentation(train, holdout, config, tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                 epochs=args.epochs, device=cuda, model_name=None)
    network = trained.network
    timings: dict[str, list[float]] = {"cpu": [], "cuda": []}
    for device in ("cpu", "cuda"):
        network.to(device)
        segment_volume(network, holdout[0].image, config, torch.device(device))  # warm-up (cuDNN autotune, threads)
        for _ in range(args.repeats):
            for pair in holdout:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                segment_volume(network, pair.image, config, torch.device(device))
                if device == "cuda":
                    torch.cuda.synchronize()
                timings[device].append(time.perf_counter() - start)
    network.to(cuda)
    dice_fp32 = validate(network, holdout, config, cuda)
    from dataclasses import replace

    dice_amp = validate(network, holdout, replace(config, inference_dtype="bfloat16"), cuda)
    delta = max(abs(dice_amp[k] - dice_fp32[k]) for k in dice_fp32)
    seen = devices_per_process()
    isolated = all(len(v) == 1 for k, v in seen.items() if k != "(empty)") and seen["(empty)"] == [] and \
        len({v[0] for k, v in seen.items() if k != "(empty)"}) == torch.cuda.device_count()
    cpu_s, cuda_s = statistics.median(timings["cpu"]), statistics.median(timings["cuda"])
    common = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "held_out_studies": len(holdout), "epochs": args.epochs,
              "train_wall_s": round(trained.wall_time_s, 1)}
    write_result("gpu_inference_speedup", value=round(cpu_s / cuda_s, 2), goal=">= 1.0", unit="x CPU speed",
                 command=COMMAND, details={**common, "cpu_median_s": round(cpu_s, 4), "cuda_median_s": round(cuda_s, 4),
                                           "volume_shapes": sorted({tuple(p.image.shape) for p in holdout})})
    write_result("gpu_amp_dice_delta", value=round(delta, 4), goal="<= 0.005", unit="Dice",
                 command=COMMAND, details={**common, "dice_float32": dice_fp32, "dice_bfloat16": dice_amp,
                                           "devices_per_process": seen, "each_user_sees_only_its_gpu": isolated})
    print(json.dumps({"speedup": cpu_s / cuda_s, "amp_delta": delta, "isolated": isolated}, indent=2))
    return 0 if isolated else 1


if __name__ == "__main__":
    raise SystemExit(main())
