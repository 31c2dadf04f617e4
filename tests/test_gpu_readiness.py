"""GPU paths checked on the CPU (issue 33): what a CUDA node would hit first, caught without one.

- the three networks run forward (and loss) on the ``meta`` device: a tensor made without ``device=`` fails there;
- under fp16 / bf16 autocast the frozen DM still runs in fp32, the loss is finite and no DM parameter gets a gradient;
- ``torch._dynamo.explain`` finds 0 graph breaks in the DKM forward (nnU-Net compiles the network on CUDA), and an
  ``aot_eager`` forward + backward runs;
- a resumed pretraining and a resumed ``--c`` training keep every optimiser ``state["step"]`` on the CPU, and the
  pretraining checkpoint carries the GradScaler's state.

What only a GPU shows (speed, cuDNN / inductor kernels, nccl, SyncBatchNorm under DDP) is not covered here.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import PHANTOM_ID, TINY_DM, use_nnunet_folders
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

from nnunet_dkm.architecture.builder import DKM_PLANS_KEY, build_kinetic_unet, build_paper_network, make_plans_block
from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint
from nnunet_dkm.diffusion.config import InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.features import (
    MAX_NOISE_SHAPES,
    KineticFeatureExtractor,
    chunked_kinetic_features,
    dm_precision,
)
from nnunet_dkm.diffusion.network import build_network
from nnunet_dkm.diffusion.presets import preset_network
from nnunet_dkm.loss.dc_ce_ssim import DC_CE_SSIM_loss, SSIMLoss
from nnunet_dkm.training.nnUNetTrainerDKM import steps_to_cpu

PATCH_2D, PATCH_3D = [32, 32], [4, 32, 32]
# the paper's features (mode A: the scheduler's add_noise) and the default ones (mode B, decoder f1)
FEATURES = {"paper": KineticFeatureConfig(mode="A", levels=(3, 4), timestep=250), "default": KineticFeatureConfig()}


def configuration(patch: list[int], features: KineticFeatureConfig) -> ConfigurationManager:
    """A small nnU-Net configuration (PlainConvUNet, InstanceNorm, 4 stages) with a "dkm" block for a tiny DM."""
    dims = len(patch)
    first = [1, 1, 1] if dims == 3 else [1, 1]
    down = [1, 2, 2] if dims == 3 else [2, 2]
    conv = "torch.nn.modules.conv.Conv3d" if dims == 3 else "torch.nn.modules.conv.Conv2d"
    norm = "torch.nn.modules.instancenorm.InstanceNorm3d" if dims == 3 else \
        "torch.nn.modules.instancenorm.InstanceNorm2d"
    arch_kwargs = {"n_stages": 4, "features_per_stage": [8, 16, 16, 16], "conv_op": conv, "kernel_sizes": [3] * 4,
                   "strides": [first, down, down, down], "n_conv_per_stage": [1] * 4,
                   "n_conv_per_stage_decoder": [1] * 3,
                   "conv_bias": True, "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                   "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                   "nonlin_kwargs": {"inplace": True}}
    config = preset_network("small", num_post_phases=2, **TINY_DM)
    checkpoint = DiffusionCheckpoint(config, build_network(config).state_dict(), InputScaling(0.5, 0.0), {})
    return ConfigurationManager({
        "patch_size": patch, "batch_size": 2,
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        DKM_PLANS_KEY: make_plans_block(checkpoint, features, "test"),
    })


def build(kind: str, features: str | KineticFeatureConfig = "paper", deep_supervision: bool = True) -> nn.Module:
    """The network nnU-Net's builder makes: "2d" (KineticUNet), "3d" (KineticUNet3D) or "paper" (PaperKineticNet)."""
    feature_config = FEATURES[features] if isinstance(features, str) else features
    if kind == "paper":
        return build_paper_network(configuration(PATCH_2D, feature_config), 1, 2, channels=(8, 16, 32, 32))
    patch = PATCH_3D if kind == "3d" else PATCH_2D
    return build_kinetic_unet(configuration(patch, feature_config), 1, 2, deep_supervision)


def segmentation_loss(ddp: bool = False) -> nn.Module:
    """nnU-Net's Dice + CE with the DKM SSIM term (as ``nnUNetTrainerDKM._build_loss`` makes it)."""
    inner = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {}, weight_ce=1,
                           weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    return DC_CE_SSIM_loss(inner, SSIMLoss(), 0.5)


def loss_of(network: nn.Module, x: torch.Tensor, ddp: bool = False) -> torch.Tensor:
    """The training loss of one batch against a fixed label map (deep supervision where the network has it)."""
    output = network(x)
    target = (x > 0).to(x.dtype)
    if isinstance(output, (list, tuple)):
        targets = [nn.functional.interpolate(target, size=o.shape[2:], mode="nearest") for o in output]
        return DeepSupervisionWrapper(segmentation_loss(ddp), [1 / 2 ** i for i in range(len(output))])(output,
                                                                                                         targets)
    return segmentation_loss(ddp)(output, target)


def batch(kind: str, device: str = "cpu") -> torch.Tensor:
    patch = PATCH_3D if kind == "3d" else PATCH_2D
    return torch.randn(2, 1, *patch, generator=torch.Generator().manual_seed(0)).to(device)


# ------------------------------------------------------------------------------------------------ meta device


@pytest.mark.parametrize("kind", ["2d", "3d", "paper"])
def test_forward_and_loss_on_the_meta_device(kind: str) -> None:
    """Every tensor of the forward (the DM's walk, its fixed noise, the fusions) and of the loss follows the input's
    device; one made on the CPU by default would meet a meta tensor and raise."""
    network = build(kind).to("meta")
    x = batch(kind, "meta")
    output = network(x)
    outputs = output if isinstance(output, (list, tuple)) else [output]
    assert all(o.device.type == "meta" for o in outputs)
    assert outputs[0].shape == (2, 2, *x.shape[2:])
    loss = loss_of(network, x)
    assert loss.device.type == "meta" and loss.ndim == 0


def test_noise_of_a_new_shape_is_made_on_the_input_device() -> None:
    """A patch shape the builder did not prepare (its noise drawn on the first call) also stays on the device."""
    extractor = build("2d").kinetic.to("meta")
    features = extractor(torch.zeros(1, 1, 16, 24, device="meta"))
    assert all(feature.device.type == "meta" for feature in features.values())


# ------------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["2d", "paper"])
def test_dm_runs_in_fp32_under_an_outer_autocast(kind: str, dtype: torch.dtype) -> None:
    network = build(kind).train()
    dm_dtypes: list[torch.dtype] = []
    for module in network.kinetic.network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(lambda module, inputs, output: dm_dtypes.append(output.dtype))
    fusion_dtypes: list[torch.dtype] = []
    fusion = network.fusions if kind == "2d" else network.blocks
    for module in fusion.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda module, inputs, output: fusion_dtypes.append(output.dtype))

    with torch.autocast("cpu", dtype=dtype):
        loss = loss_of(network, batch(kind))
    loss.backward()

    assert dm_dtypes and set(dm_dtypes) == {torch.float32}
    assert dtype in set(fusion_dtypes)  # the segmentation part does run in the outer precision
    assert torch.isfinite(loss)
    assert all(parameter.grad is None for parameter in network.kinetic.parameters())
    assert any(parameter.grad is not None for parameter in fusion.parameters())


def test_dm_precision_enters_no_autocast_where_the_device_has_none() -> None:
    assert isinstance(dm_precision("meta", True), contextlib.nullcontext)
    assert isinstance(dm_precision("cpu", False), torch.autocast)


@pytest.mark.parametrize(("card", "native", "expected"), [("Tesla V100", False, "fp32"), ("A100", True, "bf16")])
def test_precision_auto_takes_bf16_only_where_the_gpu_runs_it_natively(
    monkeypatch: pytest.MonkeyPatch, card: str, native: bool, expected: str
) -> None:
    """``torch.cuda.is_bf16_supported()`` is also true by emulation on pre-Ampere cards, where bf16 is slower."""
    from nnunet_dkm.training.variants.precision import native_bf16
    from pretrain_dm.training import resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: card)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    precision, reason = resolve_precision(torch.device("cuda"), "auto")
    assert precision == expected and card in reason
    assert native_bf16(torch.device("cuda")) is native
    assert resolve_precision(torch.device("cuda"), "bf16")[0] == "bf16"  # an explicit choice stays
    assert resolve_precision(torch.device("cpu"), "auto")[0] == "fp32"
    assert native_bf16(torch.device("meta")) is False


def test_fixed_noise_is_a_device_buffer_outside_the_state_dict() -> None:
    network = build("2d")
    extractor: KineticFeatureExtractor = network.kinetic
    noise = extractor.fixed_noise(tuple(PATCH_2D), torch.device("cpu"), torch.float32)
    assert noise is extractor.fixed_noise(tuple(PATCH_2D), torch.device("cpu"), torch.float32)  # drawn once
    expected = torch.randn((1, 2, *PATCH_2D), generator=torch.Generator().manual_seed(0))
    assert torch.equal(noise, expected)  # the noise of every call, whatever the global RNG
    assert not any("fixed_noise" in key for key in network.state_dict())
    assert any("fixed_noise" in name for name, _ in network.named_buffers())
    for size in range(8, 8 * (MAX_NOISE_SHAPES + 3), 8):  # whole images of many sizes keep a bounded cache
        extractor.fixed_noise((size, size), torch.device("cpu"), torch.float32)
    assert sum("fixed_noise" in name for name, _ in extractor.named_buffers()) == MAX_NOISE_SHAPES


@pytest.mark.parametrize("kind", ["2d", "paper"])
def test_2d_batches_go_through_the_dm_in_chunks_of_the_pixel_budget(kind: str) -> None:
    """2d networks run the DM on at most ``slice_chunk_pixels`` pixels per call, as 3D ones do, so the DM's
    activation memory is bounded whatever batch nnU-Net plans; the features are the one-call features."""
    budget = 2 * PATCH_2D[0] * PATCH_2D[1]  # two patches per call
    network = build(kind, KineticFeatureConfig(mode="A", levels=(3, 4), timestep=250, slice_chunk_pixels=budget))
    calls: list[int] = []
    network.kinetic.register_forward_pre_hook(lambda module, inputs: calls.append(len(inputs[0])))
    x = torch.randn(5, 1, *PATCH_2D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        chunked = network.eval()(x)
        assert calls == [2, 2, 1]
        whole = chunked_kinetic_features(network.kinetic, x, chunk_pixels=0)
        assert calls[3:] == [5]
        pieces = chunked_kinetic_features(network.kinetic, x)
    for level, feature in whole.items():
        torch.testing.assert_close(pieces[level], feature, rtol=1e-4, atol=1e-5)
    outputs = chunked if isinstance(chunked, (list, tuple)) else [chunked]
    assert all(torch.isfinite(output).all() for output in outputs)


# ----------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "features"), [("2d", "default"), ("2d", "paper"), ("3d", "default"),
                                                ("paper", "paper")])
def test_dkm_forward_has_no_graph_break(kind: str, features: str) -> None:
    torch._dynamo.reset()
    network = build(kind, features).eval()
    explanation = torch._dynamo.explain(network)(batch(kind))
    assert explanation.graph_break_count == 0, [str(reason.reason)[:300] for reason in explanation.break_reasons]
    torch._dynamo.reset()


@pytest.mark.slow
def test_aot_eager_forward_and_backward_match_eager() -> None:
    torch._dynamo.reset()
    network = build("2d", "paper").train()
    x = batch("2d")
    eager_loss = loss_of(network, x)
    eager_loss.backward()
    eager_grads = {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}
    network.zero_grad(set_to_none=True)

    compiled = torch.compile(network, backend="aot_eager")
    loss = loss_of(compiled, x)
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in network.kinetic.parameters())
    for name, grad in eager_grads.items():
        torch.testing.assert_close(dict(network.named_parameters())[name].grad, grad, rtol=1e-3, atol=1e-5)
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------- resumes


def test_steps_to_cpu_moves_plain_steps_and_keeps_capturable_ones() -> None:
    layer = nn.Linear(2, 2)
    moved: list[str] = []
    for options, expected in (({}, 2), ({"capturable": True}, 0)):
        moved.clear()
        optimizer = torch.optim.Adam(layer.parameters(), **options)
        for parameter in layer.parameters():
            optimizer.state[parameter] = {"step": _DeviceTagged(torch.zeros(()), moved)}
        steps_to_cpu(optimizer)
        assert len(moved) == expected  # capturable steps must stay with their parameters


def test_nnunet_resume_keeps_optimizer_steps_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``nnUNetTrainerDKM.load_checkpoint`` (nnU-Net's ``--c``) ends with every Adam step on the CPU, although
    nnU-Net loads the checkpoint onto the training device."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

    layer = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    moved: list[str] = []

    def nnunet_load(self, checkpoint) -> None:  # what nnU-Net leaves: steps where map_location put them
        for state in self.optimizer.state.values():
            state["step"] = _DeviceTagged(state["step"], moved)

    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", nnunet_load)
    trainer = nnUNetTrainerDKM.__new__(nnUNetTrainerDKM)
    trainer.optimizer = optimizer
    trainer.load_checkpoint("checkpoint_latest.pth")
    assert len(moved) == 2
    assert all(state["step"].device.type == "cpu" and not isinstance(state["step"], _DeviceTagged)
               for state in optimizer.state.values())


class _DeviceTagged(torch.Tensor):
    """A CPU tensor that records ``.cpu()`` calls (standing in for a step tensor on a GPU)."""

    @staticmethod
    def __new__(cls, tensor: torch.Tensor, calls: list[str]):
        instance = torch.Tensor._make_subclass(cls, tensor)
        instance.calls = calls
        return instance

    def cpu(self, *args, **kwargs) -> torch.Tensor:
        self.calls.append("cpu")
        return self.as_subclass(torch.Tensor).clone()


@pytest.mark.slow
def test_pretraining_resume_loads_on_the_cpu_and_restores_the_grad_scaler(
    planned_phantom, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A resumed pretraining loads its checkpoint onto the CPU (AdamW's steps stay there, whatever the device), and
    an fp16 run's GradScaler scale comes back instead of restarting at 2^16."""
    import pretrain_dm.training as training
    from pretrain_dm.settings import PretrainSettings

    use_nnunet_folders(planned_phantom, monkeypatch)
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path / "dm.pt"))
    values = dict(dataset_id=PHANTOM_ID, config_overrides={"channels": (16, 32, 32, 32)}, batch_size=2,
                  patch_size=(32, 32), validate_every=2, save_every=2, ema_decay=0.9, sample_ddim_steps=2,
                  warmup_steps=2, precision="fp16")
    first = training.DmPretrainer(PretrainSettings(steps=2, **values), progress=False)
    first.run()
    reached = first.grad_scaler.state_dict()
    assert reached != torch.amp.GradScaler("cpu").state_dict()  # two steps grew its tracker (or halved its scale)

    locations: list = []
    original = training.load_checkpoint

    def recording_load(path, map_location="cpu"):
        locations.append(map_location)  # the run's device (torch.device) before the fix, "cpu" whatever the device
        return original(path, map_location)

    monkeypatch.setattr(training, "load_checkpoint", recording_load)
    resumed = training.DmPretrainer(PretrainSettings(steps=4, **values), resume=True, progress=False)
    assert locations == ["cpu"]
    assert resumed.precision == "fp16" and resumed.grad_scaler.is_enabled()
    assert resumed.grad_scaler.state_dict() == reached
    steps = [state["step"] for state in resumed.optimizer.state.values()]
    assert steps and all(step.device.type == "cpu" for step in steps)
    resumed.run()
    assert all(state["step"].device.type == "cpu" for state in resumed.optimizer.state.values())


# ------------------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world_size: int, kind: str, folder: str) -> None:
    """One rank of two: the DKM network wrapped as nnU-Net's DDP path wraps it (``DDP(network)``, without the
    SyncBatchNorm conversion, which refuses CPU input), nnU-Net's SGD over the trainable parameters and its DDP
    Dice (batch Dice gathered over ranks), two iterations on this rank's own batches."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nnunet_dkm.training.nnUNetTrainerDKM import trainable_parameters

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # the same DM on every rank, as when each loads the one checkpoint
        network = build(kind, "paper").train()
        with torch.no_grad():  # different segmentation weights per rank: DDP must broadcast rank 0's
            for parameter in network.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.01 * rank)
        dm_before = {name: value.clone() for name, value in network.kinetic.state_dict().items()}
        wrapped = DistributedDataParallel(network)
        optimizer = torch.optim.SGD(trainable_parameters(wrapped), 1e-2, momentum=0.99, nesterov=True)
        losses = []
        for step in range(2):
            x = torch.randn(2, 1, *PATCH_2D, generator=torch.Generator().manual_seed(10 * rank + step))
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(wrapped, x, ddp=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        torch.save({"trainable": {name: p.detach().clone() for name, p in network.named_parameters()
                                  if p.requires_grad},
                    "dm_unchanged": all(torch.equal(dm_before[name], value)
                                        for name, value in network.kinetic.state_dict().items()),
                    "losses": losses}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["2d"])  # the paper network passed too (89 s on one core; same DDP mechanics)
def test_two_gloo_ranks_train_the_dkm_network_to_identical_weights(kind: str, tmp_path) -> None:
    """Two CPU processes (gloo) through DDP as nnU-Net wraps the network: the frozen DM (no gradients) and its
    noise buffer do not upset DDP, gradients are averaged, both ranks end with the same weights, the DM unchanged.
    Not covered: nnU-Net's SyncBatchNorm conversion and torch.compile under DDP (CUDA only)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, kind, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert all(rank["dm_unchanged"] for rank in ranks)
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank saw its own batches
    for name, value in ranks[0]["trainable"].items():
        torch.testing.assert_close(ranks[1]["trainable"][name], value, rtol=0, atol=1e-6)
