"""Conditional DDPM pretraining of the DM: pre-contrast -> post-contrast, in nnU-Net's preprocessed space.

The DM is 2D whatever the configuration. For ``2d`` its slices are nnU-Net's 2d slices (axis 0 of the preprocessed
arrays). For a 3D configuration (``3d_fullres``, ``3d_lowres``) they are cut from that configuration's preprocessed
volumes across ``slice_axis`` (default 0: the axis nnU-Net's ``transpose_forward`` puts first, the lowest-resolution
one, which is also the first axis of nnU-Net's 3D patch), so that the DM sees exactly the slices ``KineticUNet3D``
feeds it; the in-plane axes of the 3D patch are the DM's 2D axes. The axis is recorded in the checkpoint's metadata
(``slice_axis``) and read by the trainer.

Per step: draw 2D patches (pre-contrast + K post-contrast phases) from the cache, augment them,
map them to the DM's input range with the fixed ``InputScaling``, draw ``t ~ U[0, T)`` and noise,
``x_t = add_noise(x_post, eps, t)``, predict with ``UNet(cat[x_t, x_pre], t)`` and regress the
target of the prediction type (eps, v or x_post) with MSE. AdamW, optional EMA of the weights. On a GPU the next
step's patches are drawn and augmented in a background thread while the step runs (``BatchPrefetcher``).

Reproducibility: every random draw of step ``s`` on rank ``r`` comes from generators seeded with
``(seed, r, s)``. A run resumed with ``--continue`` at step ``s`` therefore draws exactly what the
uninterrupted run would have drawn, and continues from the restored weights, EMA weights, optimiser and
GradScaler state. On the CPU (same thread count) that continuation is bit for bit (``tests/test_pretrain_dm.py``
checks it). On CUDA it is not: no deterministic flags are set (``torch.use_deterministic_algorithms``), and
``cudnn.benchmark`` is on, so kernels may differ from run to run; a resumed run then follows the uninterrupted one
only to float rounding, like two uninterrupted runs do.

Runs in one process, or under ``torchrun --nproc_per_node N -m pretrain_dm ...`` with torch DDP
(gloo on CPU, nccl on GPU): each rank draws its own patches, gradients are averaged, rank 0
validates, plots and saves. After every step all ranks agree on whether to stop: rank 0's clock decides the
``--max-minutes`` cap, and SIGINT or SIGTERM on any rank stops every rank after the step, with a checkpoint of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LinearLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from nnunet_dkm.atomic import remove_stale_temporaries, report_removed
from nnunet_dkm.diffusion import objectives
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, load_checkpoint, save_checkpoint
from nnunet_dkm.diffusion.config import InputScaling
from nnunet_dkm.diffusion.network import build_network, make_ddpm_scheduler, training_target
from nnunet_dkm.diffusion.presets import preset_network
from nnunet_dkm.paths import dm_checkpoint_location, dm_figure_path
from nnunet_dkm.preprocessing import DmCache, PlannedDataset
from pretrain_dm.augment import AugmentationConfig, augment_patches
from pretrain_dm.objective import autocast_context, enhancement_weights, step_generators, weighted_mse
from pretrain_dm.plots import held_out_tumour_patches, plot_loss_curve, plot_samples
from pretrain_dm.settings import PretrainingError, PretrainSettings, RunContext, settings_from_dict, settings_to_dict
from pretrain_dm.shared_cache import shared_cache
from pretrain_dm.slices import PatchSampler, split_exams

VALIDATION_PATCHES = 32
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resolve_precision(device: torch.device, precision: str) -> tuple[str, str]:
    """(precision, why) for ``--precision``: ``auto`` is bf16 autocast where the device runs bf16 natively (CUDA
    with compute capability 8.0 or above, ``torch.cuda.is_bf16_supported(including_emulation=False)``), fp32
    elsewhere (pre-Ampere GPUs would only emulate bf16, which is slower than fp32; CPUs: fp32 measured faster)."""
    if precision != "auto":
        return precision, "asked for with --precision"
    if device.type != "cuda":
        return "fp32", f"--precision auto on {device.type}"
    name = torch.cuda.get_device_name(device)
    with torch.cuda.device(device):  # is_bf16_supported asks about the current device
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    if native:
        return "bf16", f"--precision auto: {name} runs bf16 natively"
    return "fp32", f"--precision auto: {name} has no native bf16 (emulated bf16 is slower than fp32)"


class PretrainingInterrupted(SystemExit):
    """SIGINT or SIGTERM stopped pretraining after a checkpoint was saved; exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[list[int]]:
    """While training runs, SIGINT and SIGTERM only append their number to the yielded list (the loop then saves
    and stops after the step); the previous handlers come back afterwards. Off the main thread nothing changes."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in STOP_SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def prefetches(device: torch.device) -> bool:
    """Whether the next step's batch is drawn in a background thread: on a GPU, so that sampling and augmentation on
    the CPU overlap the step; not on a CPU, where that thread would only take cores from the step's own threads."""
    return device.type == "cuda"


class BatchPrefetcher:
    """Training batches by step number; with ``enabled``, step s + 1's batch is drawn in one background thread
    while step s runs (at most one draw at a time, so the sampler's open cache files are never read concurrently)."""

    def __init__(self, draw: Callable[[int], Batch], enabled: bool) -> None:
        self.draw = draw
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-batches") if enabled else None
        self.ahead: tuple[int, Future] | None = None

    def batch(self, step: int) -> Batch:
        if self.pool is None:
            return self.draw(step)
        ready = self.ahead[1].result() if self.ahead is not None and self.ahead[0] == step else self.draw(step)
        self.ahead = (step + 1, self.pool.submit(self.draw, step + 1))
        return ready

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.ahead = None


class DmPretrainer:
    """One pretraining run; ``run()`` trains to ``settings.steps`` and returns the checkpoint path."""

    def __init__(self, settings: PretrainSettings, resume: bool = False, overwrite: bool = False,
                 context: RunContext | None = None, progress: bool = True):
        self.settings = settings
        self.context = context or RunContext(device=torch.device(settings.device))
        self.progress = progress and self.context.is_main
        self.dataset = PlannedDataset.load(settings.dataset_id, settings.configuration, settings.plans_identifier)
        self._check_slice_axis()
        self.checkpoint_path = dm_checkpoint_location(self.dataset.preprocessed_folder, settings.configuration,
                                                      settings.objective).path
        if self.context.is_main:
            report_removed(remove_stale_temporaries(self.checkpoint_path.parent), "partly written file")
        self._check_existing(resume, overwrite)
        self.cache: DmCache = self._shared_cache()
        if settings.slice_axis:
            self.cache = self.cache.along_axis(settings.slice_axis)
        if settings.label_free:
            self.cache = self.cache.without_labels()
        self.patch_size = tuple(settings.patch_size or self.in_plane_patch_size())
        self.config = preset_network(settings.preset,
                                     **{"num_post_phases": self.cache.num_post_phases, **settings.network_overrides()})
        if any(size % self.config.size_divisor for size in self.patch_size):
            raise PretrainingError(f"patch size {self.patch_size} is not divisible by {self.config.size_divisor}, "
                                   f"which the DM's {self.config.num_levels} levels need")
        self.scaling = InputScaling(settings.input_scale, settings.input_offset)
        self.train_exams, self.validation_exams = split_exams(self.cache.exams, settings.validation_fraction,
                                                             settings.seed)
        self.scheduler = make_ddpm_scheduler(self.config)
        torch.manual_seed(settings.seed)
        self.network = build_network(self.config).to(self.context.device)
        self.ema: AveragedModel | None = None
        if settings.ema_decay > 0:
            self.ema = AveragedModel(self.network, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
            self.ema.requires_grad_(False).n_averaged.fill_(1)  # the initial weights are the first average
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.precision, reason = resolve_precision(self.context.device, settings.precision)
        if self.progress:
            tqdm.write(f"DM pretraining precision: {self.precision} ({reason})")
        self.grad_scaler = torch.amp.GradScaler(self.context.device.type, enabled=self.precision == "fp16")
        if self.context.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one fixed patch size per run: cuDNN picks its fastest kernels once
        self.step = 0
        self.history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_step": [], "val_loss": [],
                                                "seconds": []}
        self.elapsed_before = 0.0
        if resume:
            self._restore()
        self.warmup = self._warmup_schedule()
        self.training_network: torch.nn.Module = self.network
        if self.context.world_size > 1:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.training_network = torch.nn.parallel.DistributedDataParallel(self.network, device_ids=device_ids)
        self.opened_arrays: dict = {}
        self.validation_batch = self._validation_batch()
        self.batches = BatchPrefetcher(self.training_batch, enabled=prefetches(self.context.device))

    def _check_slice_axis(self) -> None:
        """2d configurations slice along axis 0 only; 3D ones along any of their three axes."""
        settings = self.settings
        if settings.slice_axis not in (0, 1, 2):
            raise PretrainingError(f"--slice-axis must be 0, 1 or 2, got {settings.slice_axis}")
        if self.dataset.spatial_dims == 2 and settings.slice_axis != 0:
            raise PretrainingError(
                f"--slice-axis {settings.slice_axis}: configuration {settings.configuration} is 2d, whose slices are "
                f"nnU-Net's 2d slices (axis 0); the option chooses the slicing axis of a 3D configuration "
                f"(e.g. -c 3d_fullres)")

    def in_plane_patch_size(self) -> tuple[int, ...]:
        """The configuration's patch size seen by the 2D DM: the 2d patch, or a 3D patch without its slicing axis."""
        patch = list(self.dataset.configuration_manager.patch_size)
        if len(patch) == 3:
            del patch[self.settings.slice_axis]
        return tuple(int(size) for size in patch)

    def _shared_cache(self) -> DmCache:
        """The dataset's DM cache, built with ``-np`` processes; under torchrun every rank builds a share."""
        return shared_cache(self.dataset, self.context, self.settings.num_processes, self.progress)

    def snapshot_path(self, step: int) -> Path:
        """Where the copy kept at ``step`` goes: ``dm_checkpoint.step<step>.pt`` beside the checkpoint."""
        return self.checkpoint_path.with_name(f"{self.checkpoint_path.stem}.step{step}{self.checkpoint_path.suffix}")

    # -- state ---------------------------------------------------------------------------------
    def _check_existing(self, resume: bool, overwrite: bool) -> None:
        exists = self.checkpoint_path.is_file()
        if resume and not exists:
            raise PretrainingError(f"--continue: no checkpoint at {self.checkpoint_path} to continue from")
        if exists and not resume and not overwrite:
            raise PretrainingError(
                f"a DM checkpoint already exists at {self.checkpoint_path}; pass --continue to resume it "
                f"or --overwrite to train a new one"
            )

    def _restore(self) -> None:
        # loaded on the CPU: load_state_dict moves the weights and the optimiser's moments to the parameters' device,
        # but leaves AdamW's state["step"] where it was loaded; a step tensor on a GPU makes the optimiser's foreach
        # path synchronise with the host at every parameter of every step
        checkpoint = load_checkpoint(self.checkpoint_path, map_location="cpu")
        state = checkpoint.training_state
        if not state:
            raise PretrainingError(f"{self.checkpoint_path} holds no training state to continue from")
        previous = settings_from_dict(state["settings"])
        differences = self.settings.compatible_with(previous)
        if differences:
            raise PretrainingError("--continue with settings that differ from the checkpoint's: "
                                   + "; ".join(differences) + ". Use --overwrite to start a new run.")
        self.network.load_state_dict(state["raw_weights"])
        if self.ema is not None:
            self.ema.module.load_state_dict(checkpoint.weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):  # fp16 runs (checkpoints made before it was saved restart the scale)
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))

    def _checkpoint(self, elapsed: float) -> DiffusionCheckpoint:
        weights = self.saved_network().state_dict()
        return DiffusionCheckpoint(
            config=self.config,
            weights={k: v.detach().clone() for k, v in weights.items()},
            input_scaling=self.scaling,
            plans_identity=self.cache.plans_identity,
            weights_are_ema=self.ema is not None,
            metadata={
                "steps": self.step,
                "train_exams": [e.case_id for e in self.train_exams],
                "validation_exams": [e.case_id for e in self.validation_exams],
                "last_validation_loss": self.history["val_loss"][-1] if self.history["val_loss"] else None,
                "training_seconds": elapsed,
                "world_size": self.context.world_size,
                "patch_size": list(self.patch_size),
                "dataset_name": self.cache.plans_identity["dataset_name"],
                "preset": self.settings.preset,
                "recipe": {**asdict(self.settings.recipe), "patch_size": list(self.patch_size)},
                "label_free": self.settings.label_free,
                "configuration": self.settings.configuration,
                "configuration_spatial_dims": self.dataset.spatial_dims,
                "slice_axis": self.settings.slice_axis,
                "objective": self.config.objective,
            },
            training_state={
                "step": self.step,
                "raw_weights": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.grad_scaler.state_dict(),  # {} unless fp16
                "history": self.history,
                "settings": settings_to_dict(self.settings),
                "elapsed_seconds": elapsed,
            },
        )

    # -- data ------------------------------------------------------------------------------------
    def _validation_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed validation set: (patches (N, 1+K, H, W), timesteps (N,), noise (N, K, H, W)), identical at
        every evaluation so that validation losses are comparable; timesteps spread evenly over [0, T)."""
        rng = np.random.default_rng([self.settings.seed, 99])
        sampler = PatchSampler(self.validation_exams, self.patch_size, self.settings.foreground_fraction, rng)
        patches = torch.from_numpy(sampler.sample_batch(VALIDATION_PATCHES))
        generator = torch.Generator().manual_seed(self.settings.seed + 99)
        timesteps = torch.linspace(0, self.config.num_train_timesteps - 1, VALIDATION_PATCHES).long()
        noise = torch.randn((VALIDATION_PATCHES, self.config.num_post_phases, *self.patch_size), generator=generator)
        return patches, timesteps, noise

    def _scaled(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_pre (B, 1, H, W), x_post (B, K, H, W)) in the DM's input range, on the run's device."""
        patches = patches.to(self.context.device, non_blocking=True)
        scaled = patches * self.scaling.scale + self.scaling.offset
        return scaled[:, :1], scaled[:, 1:]

    def _loss(self, network: torch.nn.Module, patches: torch.Tensor, timesteps: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
        """The objective's loss (``nnunet_dkm.diffusion.objectives``) on (B, 1 + K, H, W) patches."""
        config = self.config
        x_pre, x_post = self._scaled(patches)
        timesteps, noise = (timesteps.to(self.context.device, non_blocking=True),
                            noise.to(self.context.device, non_blocking=True))
        clean = objectives.clean_image(config, x_pre, x_post)
        if config.objective == "regression":
            timesteps = torch.full_like(timesteps, config.regression_timestep)
            noisy = self.scheduler.add_noise(objectives.identity_guess(config, x_pre), noise, timesteps)
        else:
            noisy = self.scheduler.add_noise(original_samples=clean, noise=noise, timesteps=timesteps)
        with autocast_context(self.context.device, self.precision):
            prediction = network(torch.cat([noisy, objectives.condition(config, x_pre)], dim=1), timesteps)
        target = training_target(config, self.scheduler, clean, noise, timesteps)
        # the pre-only DM's loss reads no post-contrast voxel: no enhancement weighting
        weight = 0.0 if config.objective == "pre-only" else self.settings.enhancement_weight
        return weighted_mse(prediction.float(), target.float(), enhancement_weights(x_pre, x_post, weight))

    @torch.no_grad()
    def validation_loss(self) -> float:
        network = self.saved_network().eval()
        patches, timesteps, noise = self.validation_batch
        losses = [
            self._loss(network, patches[i:i + 8], timesteps[i:i + 8], noise[i:i + 8]).item()
            for i in range(0, len(patches), 8)
        ]
        self.network.train()
        return float(np.mean(losses))

    # -- the loop ----------------------------------------------------------------------------------
    def _warmup_schedule(self) -> LinearLR:
        """The learning rate rises linearly to ``learning_rate`` over ``warmup_steps``; a resumed run replays the
        schedule up to its step."""
        warmup = max(1, self.settings.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.settings.learning_rate
        schedule = LinearLR(self.optimizer, start_factor=1 / warmup, total_iters=warmup - 1)
        with warnings.catch_warnings():  # the replay steps the schedule before this process's first optimiser step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(min(self.step, warmup)):
                schedule.step()
        return schedule

    def saved_network(self) -> torch.nn.Module:
        """The weights a checkpoint holds: the EMA's where EMA is on, else the trained network."""
        return self.ema.module if self.ema is not None else self.network

    def _draw_timesteps(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """t ~ U[0, T), or with probability ``high_noise_fraction`` from U[T/2, T) where the DM must rely on the
        pre-contrast condition alone (the regime that decides whether it learns kinetics)."""
        total = self.config.num_train_timesteps
        timesteps = torch.randint(0, total, (count,), generator=generator)
        high = torch.randint(total // 2, total, (count,), generator=generator)
        chosen = torch.rand(count, generator=generator) < self.settings.high_noise_fraction
        return torch.where(chosen, high, timesteps)

    def training_batch(self, step: int) -> Batch:
        """Step ``step``'s (patches (B, 1 + K, H, W), timesteps (B,), noise (B, K, H, W)) on the CPU, augmented: a
        function of the seed, the rank and the step alone, so a batch drawn ahead equals the one drawn in place."""
        numpy_rng, torch_generator = step_generators(self.settings.seed, self.context.rank, step)
        sampler = PatchSampler(self.train_exams, self.patch_size, self.settings.foreground_fraction, numpy_rng,
                               opened=self.opened_arrays)
        patches = torch.from_numpy(sampler.sample_batch(self.settings.batch_size))
        patches = augment_patches(patches, AugmentationConfig(enabled=self.settings.augmentation), torch_generator)
        timesteps = self._draw_timesteps(patches.shape[0], torch_generator)
        noise = torch.randn((patches.shape[0], self.config.num_post_phases, *self.patch_size),
                            generator=torch_generator)
        if self.context.device.type == "cuda":  # page-locked, so that the copy to the GPU does not block
            return patches.pin_memory(), timesteps.pin_memory(), noise.pin_memory()
        return patches, timesteps, noise

    def train_step(self) -> float:
        """One optimisation step; returns the loss averaged over ranks. Raises on a non-finite loss."""
        patches, timesteps, noise = self.batches.batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.training_network, patches, timesteps, noise)
        reported = loss.detach().clone()
        if self.context.world_size > 1:
            dist.all_reduce(reported)
            reported /= self.context.world_size
        value = float(reported.item())  # the step's one host sync outside the optimiser
        if not math.isfinite(value):
            raise PretrainingError(
                f"the loss became {value} at step {self.step}; training stopped. The last good "
                f"checkpoint is kept at {self.checkpoint_path} (if one was saved). Try a lower --lr."
            )
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.warmup.step()
        if self.ema is not None:
            self.ema.update_parameters(self.network)
        self.step += 1
        return value

    def _save(self, elapsed: float) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.network.parameters()):
            raise PretrainingError(
                f"the weights became non-finite at step {self.step}; training stopped. The last good checkpoint is "
                f"kept at {self.checkpoint_path} (if one was saved). Try a lower --lr."
            )
        if self.context.is_main:
            save_checkpoint(self._checkpoint(elapsed), self.checkpoint_path)
            plot_loss_curve(self.history, dm_figure_path(self.checkpoint_path, "loss_curve"))

    def _keep_snapshot(self, elapsed: float) -> None:
        """Save a copy of the current weights (no training state) as ``dm_checkpoint.step<step>.pt``."""
        if self.context.is_main and self.step in self.settings.keep_steps:
            snapshot = self._checkpoint(elapsed)
            # no optimiser state; the raw weights stay beside EMA weights so that both can be evaluated
            snapshot.training_state = {"step": self.step, "raw_weights": snapshot.training_state["raw_weights"]} \
                if self.ema is not None else None
            save_checkpoint(snapshot, self.snapshot_path(self.step))

    def weights_digest(self) -> str:
        """SHA-256 of the raw weights: equal on every rank of a correct DDP run."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _record_rank_agreement(self) -> None:
        """Gather every rank's weight digest; rank 0 stores them in the checkpoint metadata and warns on a mismatch."""
        digests: list[str | None] = [None] * self.context.world_size
        dist.all_gather_object(digests, self.weights_digest())
        if self.context.is_main:
            checkpoint = load_checkpoint(self.checkpoint_path)
            checkpoint.metadata["rank_weight_digests"] = digests
            save_checkpoint(checkpoint, self.checkpoint_path)
            if len(set(digests)) != 1:
                tqdm.write(f"WARNING: DDP ranks ended with different weights: {digests}")
        dist.barrier()

    def _progress_bar(self) -> tqdm:
        settings = self.settings
        description = "DM pretraining"
        if settings.max_minutes is not None:
            description += f" (stops at step {settings.steps} or after {settings.max_minutes:g} min)"
        return tqdm(total=settings.steps, initial=self.step, desc=description, unit="step", disable=not self.progress,
                    dynamic_ncols=True)

    def _stop_reason(self, out_of_time: bool, received: list[int]) -> tuple[int, bool]:
        """(signal number or 0, whether the time cap is reached), the same on every rank: rank 0's clock decides
        the cap, a signal on any rank stops them all."""
        if self.context.world_size == 1:  # nothing to agree on: no device tensor, no host sync
            return (received[0] if received else 0), out_of_time
        reason = torch.tensor([received[0] if received else 0, int(out_of_time and self.context.is_main)],
                              device=self.context.device)
        dist.all_reduce(reason, op=dist.ReduceOp.MAX)
        return int(reason[0]), bool(reason[1])

    def run(self) -> Path:
        """Train to ``settings.steps`` (or until the optional ``max_minutes`` cap, or SIGINT / SIGTERM), validating
        and saving periodically and keeping a copy at each of ``settings.keep_steps``. A signal saves the step it
        stopped at and raises :class:`PretrainingInterrupted`."""
        settings = self.settings
        self.network.train()
        start, first_step = time.perf_counter(), self.step  # slices/s counts this process's steps only
        bar = self._progress_bar()
        smoothed = math.nan
        slices_per_step = settings.batch_size * self.context.world_size
        self._keep_snapshot(self.elapsed_before)
        signum = 0
        with deferred_stop_signals() as received:
            while self.step < settings.steps:
                loss = self.train_step()
                smoothed = loss if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss
                seconds = time.perf_counter() - start
                elapsed = self.elapsed_before + seconds
                self.history["step"].append(self.step)
                self.history["train_loss"].append(loss)
                self.history["seconds"].append(elapsed)
                bar.set_postfix(loss=f"{smoothed:.4f}",
                                slices_s=f"{slices_per_step * (self.step - first_step) / max(seconds, 1e-9):.1f}")
                bar.update(1)
                signum, out_of_time = self._stop_reason(
                    settings.max_minutes is not None and elapsed > 60 * settings.max_minutes, received)
                stop = out_of_time or signum > 0
                if self.context.is_main and (self.step % settings.validate_every == 0 or self.step == settings.steps
                                             or stop):
                    self.history["val_step"].append(self.step)
                    self.history["val_loss"].append(self.validation_loss())
                    bar.write(f"step {self.step}: train loss {smoothed:.4f}, validation loss "
                              f"{self.history['val_loss'][-1]:.4f}, {elapsed / 60:.1f} min")
                if self.step % settings.save_every == 0 or self.step == settings.steps or stop:
                    self._save(elapsed)
                self._keep_snapshot(elapsed)
                if out_of_time and not signum:
                    bar.write(f"stopping at step {self.step} of {settings.steps}: --max-minutes "
                              f"{settings.max_minutes:g} reached (--continue with a larger cap goes on)")
                if stop:
                    break
        bar.close()
        self.batches.close()
        if self.context.world_size > 1:
            self._record_rank_agreement()
        if signum:
            if self.context.is_main:
                print(f"{signal.Signals(signum).name}: stopped after step {self.step} of {settings.steps}; checkpoint "
                      f"saved at step {self.step} in {self.checkpoint_path}. The same command with --continue resumes "
                      "it.", flush=True)
            raise PretrainingInterrupted(signum)
        if self.context.is_main and objectives.synthesises_post_contrast(self.config):
            network = self.saved_network().eval()
            patches = held_out_tumour_patches(self.validation_exams, self.patch_size, settings.seed)
            plot_samples(network, self.config, self.scaling, patches, settings.seed, settings.sample_ddim_steps,
                         self.step, dm_figure_path(self.checkpoint_path, "samples"))
        return self.checkpoint_path
