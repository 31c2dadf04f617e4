"""DM pretraining speed: slices per second of one optimisation step (forward, backward, AdamW) and peak memory,
for the ``small`` and ``paper`` presets, at the demo's nnU-Net 2d patch size (128x128) and at 64x64.

    python benchmarks/pretrain_speed.py

Each configuration runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own.
Writes ``benchmarks/results_pretrain_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table, mean_seconds

REPO = Path(__file__).resolve().parents[1]
CASES = [  # preset, prediction type, patch, batch, timed steps
    ("small", "epsilon", 128, 8, 5),
    ("small", "sample", 128, 8, 5),
    ("small", "sample", 64, 16, 5),
    ("paper", "epsilon", 128, 2, 2),
    ("paper", "epsilon", 64, 4, 2),
]


def measure(preset: str, prediction_type: str, patch: int, batch: int, steps: int) -> dict:
    """Mean seconds of ``steps`` training steps after warm-up steps; returns seconds per step and slices per
    second."""
    import torch

    from nnunet_dkm.diffusion.network import build_network, make_ddpm_scheduler, training_target
    from nnunet_dkm.diffusion.presets import preset_network

    config = preset_network(preset, num_post_phases=2, prediction_type=prediction_type)
    network = build_network(config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    scheduler = make_ddpm_scheduler(config)
    generator = torch.Generator().manual_seed(0)
    pre = torch.randn(batch, 1, patch, patch, generator=generator)
    post = torch.randn(batch, 2, patch, patch, generator=generator)

    def step() -> None:
        noise = torch.randn(post.shape, generator=generator)
        t = torch.randint(0, config.num_train_timesteps, (batch,), generator=generator)
        noisy = scheduler.add_noise(post, noise, t)
        loss = torch.nn.functional.mse_loss(network(torch.cat([noisy, pre], 1), t),
                                            training_target(config, scheduler, post, noise, t))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = mean_seconds(step, steps)
    return {"seconds_per_step": seconds, "slices_per_second": batch / seconds,
            "parameters_millions": sum(p.numel() for p in network.parameters()) / 1e6,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)  # internal: one measurement in a subprocess
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_pretrain_speed.md")
    args = parser.parse_args()
    if args.case:
        preset, prediction_type, patch, batch, steps = args.case
        print(json.dumps(measure(preset, prediction_type, int(patch), int(batch), int(steps))))
        return
    rows = []
    for case in CASES:
        result = subprocess.run([sys.executable, __file__, "--case", *map(str, case)], capture_output=True,
                                text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append((case, measured))
        print(case, measured, flush=True)
    lines = [
        *ReportHeader("DM pretraining speed", "python benchmarks/pretrain_speed.py", f"{machine_description()}, fp32",
                      notes=["one step = forward + backward + AdamW on random data with 2 post-contrast phases; mean "
                             "of the timed steps after two warm-up steps; peak RSS of the measuring process"]).lines(),
        "",
        *markdown_table([{"preset": preset, "prediction": prediction_type, "patch": f"{patch}x{patch}", "batch": batch,
                          "params (M)": f"{m['parameters_millions']:.2f}", "s / step": f"{m['seconds_per_step']:.2f}",
                          "slices / s": f"{m['slices_per_second']:.1f}", "peak RSS (MiB)": f"{m['peak_rss_mib']:.0f}"}
                         for (preset, prediction_type, patch, batch, _), m in rows]),
    ]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
