"""``nnUNetv2_dkm_trainer_path``: the folder that nnU-Net's ``nnUNet_extTrainer`` must name, and an optional startup
hook that names it for every Python process of this environment.

    export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)        # per shell
    nnUNetv2_dkm_trainer_path --install-startup-hook             # once per environment: no export needed any more
    nnUNetv2_dkm_trainer_path --remove-startup-hook
    nnUNetv2_dkm_trainer_path --check [-d 990 -c 2d]             # one line per check of the environment
    nnUNetv2_dkm_trainer_path --check -d 990 -c 2d -tr nnUNetTrainerDKM           # before nnUNetv2_train
    nnUNetv2_dkm_trainer_path --check -d 990 -c 2d -tr nnUNetTrainerDKM -i IN -o OUT  # before nnUNetv2_predict

If nnUNetv2_train or nnUNetv2_predict answers "Could not find requested nnunet trainer nnUNetTrainerDKM ...", the
variable is missing in that shell: run the export line above (or install the startup hook once), then
``nnUNetv2_dkm_trainer_path --check`` to confirm (exit status 0 when every check passes). With ``-d``, ``-tr``,
``-i`` and ``-o`` it also checks, before a run, what nnU-Net's own commands would otherwise end in a traceback (or
silently) on: the DM the trainer needs, the number of training cases, the trainer's name, the channels and
dimension of the prediction inputs, and ``-o`` being the ``-i`` folder.

nnU-Net 2.8 looks for trainers outside its package only in the folders of ``nnUNet_extTrainer``, read when it looks.
The startup hook is a one-line ``.pth`` file in this environment's site-packages: at interpreter start it appends
our folder to ``nnUNet_extTrainer`` (keeping a user's own folders first) unless it is there already, and does nothing
if nnunet-dkm is no longer installed. It is opt-in because it touches every Python process of the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from collections.abc import MutableMapping
from pathlib import Path

from nnunet_dkm.command_line import add_verbose_argument, command_line_entry

EXT_TRAINER_FOLDER = Path(__file__).resolve().parent / "ext_trainer"
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
STARTUP_HOOK_NAME = "nnunet_dkm_ext_trainer.pth"
# a .pth line that starts with "import" is executed at interpreter start; it must never fail
STARTUP_HOOK_LINE = (
    'import os; exec("try:\\n    from nnunet_dkm.ext_trainer_path import add_to_environment\\n'
    '    add_to_environment(os.environ)\\nexcept Exception:\\n    pass")\n'
)


def export_hint() -> str:
    """The line a user must run so that nnU-Net finds the DKM trainers."""
    return f"export {EXT_TRAINER_VARIABLE}=$(nnUNetv2_dkm_trainer_path)"


def _folders(value: str) -> list[str]:
    return [folder for folder in value.split(os.pathsep) if folder.strip()]


def ext_trainer_is_set(environment: MutableMapping[str, str] | None = None) -> bool:
    """Whether ``nnUNet_extTrainer`` names our shim folder."""
    environment = os.environ if environment is None else environment
    return EXT_TRAINER_FOLDER in [Path(p).resolve() for p in _folders(environment.get(EXT_TRAINER_VARIABLE, ""))]


def add_to_environment(environment: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Append our shim folder to ``environment[nnUNet_extTrainer]`` (a user's folders stay first); returns it."""
    if not ext_trainer_is_set(environment):
        folders = _folders(environment.get(EXT_TRAINER_VARIABLE, ""))
        environment[EXT_TRAINER_VARIABLE] = os.pathsep.join([*folders, str(EXT_TRAINER_FOLDER)])
    return environment


def site_packages() -> Path:
    """This interpreter's site-packages (where pip installed nnunet-dkm's dependencies)."""
    return Path(sysconfig.get_paths()["purelib"])


def install_startup_hook(folder: Path | None = None) -> Path:
    """Write the startup hook into ``folder`` (default: this environment's site-packages); returns its path."""
    hook = (folder or site_packages()) / STARTUP_HOOK_NAME
    hook.write_text(STARTUP_HOOK_LINE)
    return hook


def remove_startup_hook(folder: Path | None = None) -> Path | None:
    """Delete the startup hook from ``folder`` (default: site-packages); returns its path, or None if absent."""
    hook = (folder or site_packages()) / STARTUP_HOOK_NAME
    if not hook.is_file():
        return None
    hook.unlink()
    return hook


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_dkm_trainer_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--install-startup-hook", action="store_true",
                       help="make nnU-Net find the DKM trainers in every Python process of this environment, "
                            "without the export")
    group.add_argument("--remove-startup-hook", action="store_true", help="undo --install-startup-hook")
    group.add_argument("--check", action="store_true",
                       help="diagnose the environment, one line per check: the nnU-Net folder variables, "
                            "nnUNet_extTrainer, the shim's import, nnU-Net's lookup of every DKM trainer and, with "
                            "-d, the dataset's DM checkpoint and case count; with -tr, -i, -o: the trainer name and "
                            "the prediction folders; exit status 1 if any check fails")
    parser.add_argument("-d", "--dataset", default=None, help="with --check: also check this dataset's DM checkpoint")
    parser.add_argument("-c", "--configuration", default="2d", help="with --check -d: nnU-Net configuration (2d)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="with --check -d: plans identifier")
    parser.add_argument("-tr", "--trainer", default=None,
                        help="with --check: the trainer of nnUNetv2_train / nnUNetv2_predict -tr (found by nnU-Net? "
                             "with -d, its DM checked as it will check it)")
    parser.add_argument("-i", "--input", type=Path, default=None,
                        help="with --check: the folder you will give nnUNetv2_predict -i")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="with --check: the folder you will give nnUNetv2_predict -o")
    parser.add_argument("--site-packages", type=Path, default=None, help=argparse.SUPPRESS)  # for tests
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    given = [option for option, value in (("-d", args.dataset), ("-tr", args.trainer), ("-i", args.input),
                                          ("-o", args.output)) if value is not None]
    if given and not args.check:
        parser.error(f"{', '.join(given)}: options of --check")
    if args.check:
        from nnunet_dkm.environment_check import diagnose  # imports nnU-Net and torch: only here

        results = diagnose(args.dataset, args.configuration, args.plans, args.trainer, args.input, args.output)
        print("\n".join(result.line() for result in results))
        sys.exit(0 if all(result.ok for result in results) else 1)
    if not (EXT_TRAINER_FOLDER / "nnunet_dkm_trainers.py").is_file():
        sys.exit(f"error: {EXT_TRAINER_FOLDER} lacks nnunet_dkm_trainers.py; reinstall nnunet-dkm")
    if args.install_startup_hook:
        hook = install_startup_hook(args.site_packages)
        print(f"wrote {hook}: new Python processes of this environment add {EXT_TRAINER_FOLDER} to "
              f"{EXT_TRAINER_VARIABLE}; undo with nnUNetv2_dkm_trainer_path --remove-startup-hook")
    elif args.remove_startup_hook:
        hook = remove_startup_hook(args.site_packages)
        print(f"removed {hook}" if hook else f"no startup hook in {args.site_packages or site_packages()}")
    else:
        print(EXT_TRAINER_FOLDER)


if __name__ == "__main__":
    main()
