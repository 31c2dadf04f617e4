"""The virtual-contrast companion dataset (synthesise, then segment: Osuala et al., SPIE Medical Imaging 2024):
vanilla nnU-Net on two channels, the pre-contrast image and the DM's synthetic early post-contrast image.

The synthetic image is made from the pre-contrast image alone, for training and test cases alike, by the code of
``nnUNetv2_dkm_synthesize_postcontrast``: no real post-contrast voxel reaches any input. It is cached beside the DM
(``nnUNet_preprocessed/<dataset>/dkm/<configuration>/virtual_contrast/``, with the DM's identity and the sampler), and
the companion ``Dataset{VID}_<name>VirtualContrast`` (same cases, labels and split) records both in its
``dataset.json``; a companion made with another DM or sampler is refused rather than reused (its trained models
would not match).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nnunet_dkm.atomic import remove_stale_temporaries, replace_folder, report_removed
from nnunet_dkm.diffusion.postcontrast import synthesize_postcontrast
from nnunet_dkm.evaluation.oracle import OracleDatasetError, companion_id
from nnunet_dkm.paths import dataset_id

VIRTUAL_CONTRAST_SUFFIX = "VirtualContrast"
SYNTHETIC_PHASE = 1


@dataclass(frozen=True)
class SynthesisRecipe:
    """Which DM made the synthetic images, and how."""

    dm_checkpoint: str
    dm_sha256: str
    configuration: str
    ddim_steps: int
    eta: float
    seed: int = 0


def pre_contrast_images(source: Path, split: str, file_ending: str) -> list[Path]:
    """The ``images{split}/*_0000`` files of the labelled cases of a split."""
    labels = source / f"labels{split}"
    cases = sorted(p.name[: -len(file_ending)] for p in labels.glob(f"*{file_ending}")) if labels.is_dir() else []
    return [source / f"images{split}" / f"{case}_0000{file_ending}" for case in cases]


def synthetic_cache(source: Path, preprocessed: Path, recipe: SynthesisRecipe, plans: str, file_ending: str,
                    device: str) -> tuple[Path, float]:
    """The folder of synthetic phases of every labelled training and test case (made where missing or made by
    another recipe) and the seconds the synthesis took (as recorded when it was made)."""
    folder = preprocessed / "dkm" / recipe.configuration / "virtual_contrast"
    record = folder / "recipe.json"
    if record.is_file():
        stored = json.loads(record.read_text())
        if stored.get("recipe") == asdict(recipe):
            return folder, float(stored["seconds"])
    inputs = pre_contrast_images(source, "Tr", file_ending) + pre_contrast_images(source, "Ts", file_ending)
    report_removed(remove_stale_temporaries(folder.parent), "synthetic images")
    timing = {}

    def fill(temporary: Path) -> None:
        start = time.perf_counter()
        synthesize_postcontrast(inputs, temporary, dataset_id(source.name), recipe.configuration, plans,
                                Path(recipe.dm_checkpoint), device, "ddim", recipe.ddim_steps, recipe.seed,
                                eta=recipe.eta)
        timing["seconds"] = time.perf_counter() - start
        (temporary / "recipe.json").write_text(json.dumps({"recipe": asdict(recipe), "seconds": timing["seconds"],
                                                          "cases": len(inputs)}, indent=1))

    replace_folder(folder, fill)
    seconds = timing["seconds"]
    return folder, seconds


def find_virtual_contrast_dataset(raw_folder: Path, source: Path) -> Path | None:
    """An existing companion of ``source`` (by the ``virtual_contrast_of`` entry of its ``dataset.json``)."""
    for path in sorted(raw_folder.glob(f"Dataset*_*{VIRTUAL_CONTRAST_SUFFIX}")):
        info = json.loads((path / "dataset.json").read_text()) if (path / "dataset.json").is_file() else {}
        if info.get("dkm", {}).get("virtual_contrast_of") == source.name:
            return path
    return None


def _copy_cases(source: Path, synthetic: Path, target: Path, split: str, file_ending: str) -> list[str]:
    """Channel 0 the pre-contrast image, channel 1 the synthetic phase, and the label, of each labelled case."""
    cases = [p.name[: -len(f"_0000{file_ending}")] for p in pre_contrast_images(source, split, file_ending)]
    for case in cases:
        (target / f"images{split}").mkdir(parents=True, exist_ok=True)
        (target / f"labels{split}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / f"images{split}" / f"{case}_0000{file_ending}",
                        target / f"images{split}" / f"{case}_0000{file_ending}")
        shutil.copyfile(synthetic / f"{case}_{SYNTHETIC_PHASE:04d}{file_ending}",
                        target / f"images{split}" / f"{case}_0001{file_ending}")
        shutil.copyfile(source / f"labels{split}" / f"{case}{file_ending}",
                        target / f"labels{split}" / f"{case}{file_ending}")
    return cases


def make_virtual_contrast_dataset(source: Path, preprocessed: Path, recipe: SynthesisRecipe, plans: str,
                                  device: str, requested_id: int | None = None) -> tuple[Path, float]:
    """Create (or reuse) the companion of raw dataset ``source``; returns (its folder, synthesis seconds).

    Raises ``OracleDatasetError`` where an existing companion was made by another DM or sampler.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    raw_folder = source.parent
    existing = find_virtual_contrast_dataset(raw_folder, source)
    if existing is not None:
        made_by = json.loads((existing / "dataset.json").read_text())["dkm"].get("synthesis")
        if made_by != asdict(recipe):
            raise OracleDatasetError(
                f"{existing} was made with another DM or sampler ({made_by}; now {asdict(recipe)}): its trained "
                f"models would not match. Delete it (and its nnUNet_preprocessed / nnUNet_results folders) to "
                f"rebuild it with this DM")
        return existing, json.loads((existing / "dataset.json").read_text())["dkm"]["synthesis_seconds"]
    info = json.loads((source / "dataset.json").read_text())
    file_ending = info["file_ending"]
    synthetic, seconds = synthetic_cache(source, preprocessed, recipe, plans, file_ending, device)
    requested_id = companion_id(source, requested_id, "--virtual-contrast-id")
    name = f"Dataset{requested_id:03d}_{source.name.split('_', 1)[1]}{VIRTUAL_CONTRAST_SUFFIX}"
    report_removed(remove_stale_temporaries(raw_folder), "dataset")
    def fill(folder: Path) -> None:
        training = _copy_cases(source, synthetic, folder, "Tr", file_ending)
        test = _copy_cases(source, synthetic, folder, "Ts", file_ending)
        if not training:
            raise OracleDatasetError(f"{source / 'labelsTr'} holds no labelled case")
        dkm = {"virtual_contrast_of": source.name, "synthesis": asdict(recipe), "synthesis_seconds": seconds,
               "num_training": len(training), "num_test": len(test),
               "input": f"channel 0 pre-contrast, channel 1 the DM's synthetic post-contrast phase {SYNTHETIC_PHASE} "
                        f"(made from the pre-contrast image alone)",
               "label_source": info.get("dkm", {}).get("label_source", "unknown")}
        generate_dataset_json(
            str(folder), channel_names={0: "pre-contrast", 1: f"synthetic post-contrast {SYNTHETIC_PHASE}"},
            labels=info["labels"], num_training_cases=len(training), file_ending=file_ending, dataset_name=name,
            description=f"Virtual-contrast companion of {source.name}: pre-contrast image + the DM's synthetic "
                        f"post-contrast image. Made by nnUNetv2_dkm_benchmark.",
            converted_by="nnunet-dkm", dkm=dkm,
        )

    return replace_folder(raw_folder / name, fill), seconds
