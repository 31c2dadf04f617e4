"""The DM cache under torchrun: every rank builds a share of the exams, so no rank waits for the whole build alone.

1. Rank 0 decides: a reusable cache is loaded by everyone; otherwise it lists the exams and makes one temporary
   folder beside the cache, and tells every rank (a broadcast).
2. Rank r preprocesses ``exams[r::world_size]`` into that folder with its share of ``-np`` processes and returns
   its manifest entries (an all-gather, which is also the barrier; a rank that failed sends its error instead, so
   the others raise too rather than wait).
3. Rank 0 writes the manifest in the exams' order and renames the folder into place; a broadcast of the outcome
   is the second barrier; then every rank loads the cache.

The build's collectives run in their own gloo group whose timeout is the build's (:data:`BUILD_TIMEOUT`), not the
training's 30 minutes: waiting at these barriers is waiting for the slowest rank's share of the preprocessing, which
at MAMA-MIA's size (1,506 exams of 512x512x160) can take longer than 30 minutes, and is not a hang. A rank that
raises reports its error through the all-gather; a rank that dies is ended with its job by torchrun.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist

from nnunet_dkm.atomic import make_temporary_folder, publish, remove_stale_temporaries, report_removed
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.preprocessing import DmCache, PlannedDataset, build_cache, find_pretraining_exams
from nnunet_dkm.preprocessing.dm_cache import cache_exams, load_cache, reusable_cache, write_manifest
from pretrain_dm.settings import PretrainingError, RunContext

BUILD_TIMEOUT = timedelta(hours=24)
T = TypeVar("T")


def shared_cache(dataset: PlannedDataset, context: RunContext, processes: int, progress: bool) -> DmCache:
    """The dataset's DM cache, built by this process alone or, under torchrun, by every rank a share.

    Args:
        processes: worker processes per node (``-np``); under torchrun each rank uses its share of them
            (``processes // LOCAL_WORLD_SIZE``, at least 1).
    """
    if context.world_size == 1:
        return build_cache(dataset, processes=processes, progress=progress)
    group = dist.new_group(backend="gloo", timeout=BUILD_TIMEOUT)
    try:
        return _build_sharded(dataset, context, processes, progress, group)
    finally:
        dist.destroy_process_group(group)


def _attempt(step: Callable[[], T]) -> tuple[T | None, str | None, Exception | None]:
    """(result, None, None), or (None, the error in one line, the error) where ``step`` raised."""
    try:
        return step(), None, None
    except Exception as error:  # sent to the other ranks, then raised here
        line = str(error) if isinstance(error, NnunetDkmError) else f"{type(error).__name__}: {error}"
        return None, line, error


def _plan(dataset: PlannedDataset, folder: Path) -> tuple[Path, list] | None:
    """Rank 0: None where the cache is reusable, else (the temporary folder to build in, the exams)."""
    if reusable_cache(folder, dataset.plans_identity()) is not None:
        return None
    exams = find_pretraining_exams(dataset.raw_folder)
    report_removed(remove_stale_temporaries(folder.parent), "DM cache")
    return make_temporary_folder(folder.parent, folder.name), exams


def _build_sharded(dataset: PlannedDataset, context: RunContext, processes: int, progress: bool,
                   group: dist.ProcessGroup) -> DmCache:
    folder = dataset.dkm_folder / "cache"
    plan, error, local_error = _attempt(lambda: _plan(dataset, folder)) if context.is_main else (None, None, None)
    message: list = [(plan, error)]
    dist.broadcast_object_list(message, src=0, group=group)
    plan, error = message[0]
    if local_error is not None:
        raise local_error
    if error is not None:
        raise PretrainingError(error)
    if plan is None:
        return load_cache(folder)
    temporary, exams = plan
    share = max(1, processes // int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size)))
    rank, size = context.rank, context.world_size
    description = f"DM cache ({dataset.configuration}, rank {rank}'s {len(exams[rank::size])} of {len(exams)} exams)"
    entries, error, build_error = _attempt(
        lambda: cache_exams(exams[rank::size], temporary, dataset, share, progress, description))
    gathered: list = [None] * size
    dist.all_gather_object(gathered, (entries, error), group=group)
    errors = [f"rank {r}: {error}" for r, (_, error) in enumerate(gathered) if error is not None]
    publish_error = None
    if context.is_main:
        _, error, publish_error = _attempt(lambda: _publish(dataset, temporary, folder, exams, gathered, errors))
    message = [error]
    dist.broadcast_object_list(message, src=0, group=group)
    if build_error is not None or publish_error is not None:
        raise build_error or publish_error
    if errors or message[0] is not None:
        raise PretrainingError(f"the DM cache could not be built: {'; '.join(errors) or message[0]}")
    return load_cache(folder)


def _publish(dataset: PlannedDataset, temporary: Path, folder: Path, exams: list, gathered: list,
             errors: list[str]) -> None:
    """Rank 0: the ranks' entries in the exams' order into the manifest, the folder into place (or removed where
    a rank failed)."""
    if errors:
        shutil.rmtree(temporary, ignore_errors=True)
        return
    size = len(gathered)
    entries: list = [None] * len(exams)
    for rank, (shard, _) in enumerate(gathered):
        entries[rank::size] = shard
    write_manifest(temporary, dataset.plans_identity(), len(exams[0].post_files), entries)
    if folder.exists():
        shutil.rmtree(folder)
    publish(temporary, folder)
