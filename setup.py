"""nnunet-dkm: Diffusion Kinetic Model (Lv et al., MICCAI 2023) as an nnU-Net v2 plugin."""

from setuptools import find_packages, setup

setup(
    name="nnunet-dkm",
    version="0.1.0",
    description=(
        "Breast cancer segmentation on pre-contrast DCE-MRI with the Diffusion Kinetic Model, as an nnU-Net v2 plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_dkm", "nnunet_dkm.*", "dataset_conversion", "dataset_conversion.*",
                                    "pretrain_dm", "pretrain_dm.*"]),
    include_package_data=True,
    # the nnUNet_extTrainer shim folder is deliberately not a package (nnU-Net imports its module top-level)
    package_data={"nnunet_dkm": ["ext_trainer/nnunet_dkm_trainers.py"]},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "monai>=1.4,<1.7",  # network.py: ddim_timesteps works around DDIMScheduler spacing in 1.6
        "dcmri>=0.6",
        "pydicom>=2.4",
        "SimpleITK>=2.2",
        "numpy",
        "scipy",
        "tqdm",
        "matplotlib",
        "scikit-learn",
        "scikit-image",  # SSIM maps of the DM-quality measure
        "pandas",
        "tabulate",  # pandas DataFrame.to_markdown: the reports' tables (nnunet_dkm.reporting.markdown_table)
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "ruff"]},
    entry_points={
        "console_scripts": [
            "nnUNetv2_dkm_synthesize=dataset_conversion.phantom.synthesize:main",
            "nnUNetv2_dkm_phantom_stats=dataset_conversion.phantom.stats:main",
            "nnUNetv2_dkm_convert_nact=dataset_conversion.convert_nact:main",
            "nnUNetv2_dkm_convert_mamamia=dataset_conversion.convert_mamamia:main",
            "nnUNetv2_dkm_pretrain=pretrain_dm.cli:main",
            "nnUNetv2_dkm_synthesize_postcontrast=nnunet_dkm.diffusion.postcontrast:main",
            "nnUNetv2_dkm_trainer_path=nnunet_dkm.ext_trainer_path:main",
            "nnUNetv2_dkm_benchmark=nnunet_dkm.evaluation.benchmark.cli:main",
            "nnUNetv2_dkm_probe=nnunet_dkm.probe.cli:main",
            "nnUNetv2_dkm_dm_quality=nnunet_dkm.evaluation.dm_quality_cli:main",
            "nnUNetv2_dkm_export_dm=nnunet_dkm.diffusion.shipping:export_main",
            "nnUNetv2_dkm_install_dm=nnunet_dkm.diffusion.shipping:install_main",
        ]
    },
)
