"""Task index (HDF5), its builder, and support-set sampling.

* :func:`build_index` — recipe + source folder -> index file (see ``docs/index-format.md``);
* :class:`TaskIndex` — open an index (file, manifest or list), list tasks, load splits,
  sample :class:`Episode` objects;
* :class:`EpisodeDataset` — endless torch ``IterableDataset`` of training episodes.
"""

from __future__ import annotations

from incontext.data.builder import BuildError, BuildReport, build_index
from incontext.data.episode import Episode
from incontext.data.index_format import (
    IndexFormatError,
    TaskInfo,
    merge,
    summarize,
    validate,
    write_manifest,
)
from incontext.data.sampler import EpisodeDataset, SamplingError, TaskIndex

__all__ = [
    "BuildError", "BuildReport", "Episode", "EpisodeDataset", "IndexFormatError",
    "SamplingError", "TaskIndex", "TaskInfo", "build_index", "merge", "summarize",
    "validate", "write_manifest",
]
