"""Message names and record keys of the CoOpt protocol, shared by the ServerApp and ClientApp.

One round:

1. ``query.uniformity``  platform → every node: shared-set ids, target width, data set.
   Reply: the node's projected shared-set targets W_k ψ_k(S) and its own uniformity value
   (the platform recomputes V from the targets and does not trust the scalar).
2. shard assignment and anchor choice happen on the platform.
3. ``train.align``  platform → every accepted node: its shard ids (the shard assignment),
   the anchor's shared-set targets (the anchor-target broadcast).
   Reply: the aligned targets of its shard (the aligned-target upload).
4. merge on the platform.

Continuous optimization: each participant holds an evolution path of priors; both messages
carry the stage of every partition (``stages``), decided by the platform at the start of each
round, and the node embeds with the prior of its own stage and echoes it.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

# Message types (category.action): the ClientApp registers the actions.
ACTION_UNIFORMITY = "uniformity"
ACTION_ALIGN = "align"
MSG_UNIFORMITY = f"query.{ACTION_UNIFORMITY}"
MSG_ALIGN = f"train.{ACTION_ALIGN}"

# Record names inside a message's RecordDict.
CONFIG = "config"  # ConfigRecord platform → node
NODE = "node"  # ConfigRecord node → platform (identity, scalars, timings)
ARRAYS = "arrays"  # ArrayRecord, either direction

# ArrayRecord keys.
SHARED_IDS = "shared-ids"  # int64 (|S|,)
SHARD_IDS = "shard-ids"  # int64 (m,)
SHARED_TARGETS = "shared-targets"  # float32 (|S|, n) W_k ψ_k(S)
ANCHOR_TARGETS = "anchor-targets"  # float32 (|S|, n) W* ψ*(S)
IDS = "ids"  # int64 (m,) ids of the uploaded targets
TARGETS = "targets"  # float32 (m, n) aligned targets of the shard
SHARED_ALIGNED = "shared-aligned"  # float32 (|S|, n) T_k W_k ψ_k(S)
SHARED_IMAGES = "shared-images"  # uint8 (|S|, H, W, 3): S sent by the platform (local data mode)
SHARED_LABELS = "shared-labels"  # int64 (|S|,): S labels, when the platform has them (local data mode)

# ConfigRecord keys platform → node.
ROUND = "round"
SEED = "seed"
TARGET_DIM = "target-dim"
DATASET = "dataset"
DATA_ROOT = "data-root"
RIDGE = "ridge"
IS_ANCHOR = "is-anchor"
DATA_MODE = "data-mode"  # "platform" (ids index the platform's D) | "local" (ids index the node's data)
STAGES = "stages"  # list[int] evolution stage of every partition, indexed by partition id

# ConfigRecord keys node → platform.
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
PRIOR = "prior"
PRIOR_KIND = "prior-kind"
FEATURE_DIM = "feature-dim"
NUM_SAMPLES = "num-samples"
REPORTED_UNIFORMITY = "reported-uniformity"  # V of the raw features ψ_k(S) (informative)
REPORTED_TARGET_UNIFORMITY = "reported-target-uniformity"  # V of W_k ψ_k(S), checked by the platform
NAME = "name"  # the participant's name: namespaces its sample ids in local data mode
RESIDUAL = "residual"
EMBED_SECONDS = "embed-seconds"
CACHED = "cached"  # number of samples whose features came from the node's cache

# Node config keys of a deployed SuperNode (``flower-supernode --node-config``).
NODE_PRIOR = "prior"  # the node's prior spec
NODE_DATA = "data"  # the node's own data-set spec (local data mode): npz:/path, folder:/path, ...
NODE_NAME = "name"  # the participant's name (default partition-<id>)
NODE_DATA_ROOT = "data-root"  # root for relative paths in the node's data spec
STAGE = "stage"  # the evolution stage whose prior the node used
NUM_STAGES = "num-stages"  # length of the node's evolution path


def array_view(array: Any) -> np.ndarray:
    """Read-only view of a Flower ``Array``'s data, without the copy ``Array.numpy()`` makes.

    ``Array.numpy()`` runs ``np.load`` on the serialized bytes, which copies them: for an
    aligned-target upload that is one more copy of the largest payload on the platform. The
    ``.npy`` header is parsed here and the data section viewed in place (never unpickled).

    Parameters
    ----------
    array
        A ``flwr.app.Array``; anything not serialized as ``numpy.ndarray`` falls back to
        ``array.numpy()``.

    Returns
    -------
    np.ndarray
        The array, read-only, sharing memory with the message.

    Raises
    ------
    ValueError
        The bytes are not a well-formed ``.npy`` buffer of a non-object dtype.
    """
    if getattr(array, "stype", None) != "numpy.ndarray":
        return array.numpy()
    data = array.data
    fh = io.BytesIO(data)  # shares the bytes until written to: no copy
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    count = math.prod(shape)
    offset = fh.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"array data holds {len(data) - offset} bytes, its header says {count * dtype.itemsize}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")
