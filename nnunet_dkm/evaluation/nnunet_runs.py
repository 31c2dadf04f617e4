"""Train and predict with nnU-Net's own commands (``nnUNetv2_train``, ``nnUNetv2_predict``) as subprocesses.

A model is trained only when its ``checkpoint_final.pth`` is missing; an interrupted training resumes with
``--c``. Predictions go to ``<folder>.partial`` and are renamed when complete, so an interrupted run resumes with
nnU-Net's ``--continue_prediction`` and a finished folder is never half-written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.ext_trainer_path import add_to_environment
from nnunet_dkm.paths import NNUNET_FOLDERS


def nnunet_command(name: str) -> str:
    """The nnU-Net console script next to this interpreter (the project .venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else name


def child_environment() -> dict[str, str]:
    """The environment for nnU-Net children: ours, with ``nnUNet_extTrainer`` naming the DKM trainers."""
    return dict(add_to_environment(dict(os.environ)))


def use_workdir(workdir: Path) -> None:
    """Point nnU-Net's three folders at ``workdir`` (made where missing) for this process and its children, with one
    data-augmentation and preprocessing process each (as runs pinned to a core need) and no
    ``$nnUNet_dkm_checkpoint``."""
    for name in NNUNET_FOLDERS:
        (workdir / name).mkdir(parents=True, exist_ok=True)
    os.environ.update({name: str(workdir / name) for name in NNUNET_FOLDERS} | {"nnUNet_n_proc_DA": "0",
                                                                                "nnUNet_def_n_proc": "1"})
    os.environ.pop("nnUNet_dkm_checkpoint", None)


def run_command(command: list[str], log_hint: str = "", unset: tuple[str, ...] = (),
                extra: dict[str, str] | None = None) -> None:
    """Run ``command`` with its output shown live, without the variables ``unset`` and with ``extra`` set; raise on
    failure."""
    shown = " ".join(f"{k}={v}" for k, v in (extra or {}).items())
    print("\n$ " + (shown + " " if shown else "") + " ".join(command), flush=True)
    env = {k: v for k, v in child_environment().items() if k not in unset} | (extra or {})
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise NnunetDkmError(f"`{' '.join(command)}` failed with exit code {result.returncode}. {log_hint}".strip())


@dataclass(frozen=True)
class TrainedModel:
    """One nnU-Net model: ``<results root>/<dataset>/<trainer>__<plans>__<configuration>/fold_<fold>``.

    ``results_root`` None is ``$nnUNet_results`` (where ``nnUNetv2_train`` puts a model by default); another root
    holds an independent repeat of the same training, and nnU-Net's commands run with ``nnUNet_results`` set to it.
    """

    dataset_id: int
    dataset_name: str
    trainer: str
    plans: str
    configuration: str
    fold: int
    results_root: Path | None = None

    @property
    def model_folder(self) -> Path:
        """nnU-Net's output folder of this trainer, plans and configuration (``get_output_folder``)."""
        if not os.environ.get("nnUNet_results"):
            raise NnunetDkmError("nnUNet_results is not set: export nnUNet_results=/path/to/nnUNet_results")
        if self.results_root is not None:
            return self.results_root / self.dataset_name / f"{self.trainer}__{self.plans}__{self.configuration}"
        return Path(get_output_folder(self.dataset_name, self.trainer, self.plans, self.configuration))

    @property
    def environment(self) -> dict[str, str]:
        """Variables nnU-Net's commands of this model run with."""
        return {} if self.results_root is None else {"nnUNet_results": str(self.results_root)}

    @property
    def fold_folder(self) -> Path:
        return self.model_folder / f"fold_{self.fold}"

    @property
    def is_trained(self) -> bool:
        return (self.fold_folder / "checkpoint_final.pth").is_file()

    def train(self, device: str) -> None:
        """Train with ``nnUNetv2_train`` unless trained; resume with ``--c`` from ``checkpoint_latest.pth``."""
        if self.is_trained:
            print(f"reusing {self.fold_folder}", flush=True)
            return
        command = [nnunet_command("nnUNetv2_train"), str(self.dataset_id), self.configuration, str(self.fold),
                   "-tr", self.trainer, "-p", self.plans, "-device", device]
        if (self.fold_folder / "checkpoint_latest.pth").is_file():
            command.append("--c")
        run_command(command, f"nnU-Net's log is in {self.fold_folder}.", extra=self.environment)
        if not self.is_trained:
            final = self.fold_folder / "checkpoint_final.pth"
            raise NnunetDkmError(f"{' '.join(command)} ended without writing {final}")

    def predict(self, input_folder: Path, output_folder: Path, device: str, case_ids: list[str],
                file_ending: str) -> Path:
        """``nnUNetv2_predict`` of every image in ``input_folder`` into ``output_folder``; skipped when complete."""
        expected = [output_folder / f"{case}{file_ending}" for case in case_ids]
        if output_folder.is_dir() and all(p.is_file() for p in expected):
            return output_folder
        partial = output_folder.with_name(output_folder.name + ".partial")
        command = [nnunet_command("nnUNetv2_predict"), "-i", str(input_folder), "-o", str(partial),
                   "-d", str(self.dataset_id), "-c", self.configuration, "-f", str(self.fold), "-tr", self.trainer,
                   "-p", self.plans, "-device", device, "-npp", "0", "-nps", "0", "--continue_prediction"]
        run_command(command, extra=self.environment)
        missing = [p.name for p in expected if not (partial / p.name).is_file()]
        if missing:
            raise NnunetDkmError(f"nnUNetv2_predict wrote no prediction for {missing} in {partial}")
        if output_folder.exists():
            shutil.rmtree(output_folder)
        os.replace(partial, output_folder)
        return output_folder
