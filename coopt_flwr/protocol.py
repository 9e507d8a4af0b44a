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

# ConfigRecord keys platform → node.
ROUND = "round"
SEED = "seed"
TARGET_DIM = "target-dim"
DATASET = "dataset"
DATA_ROOT = "data-root"
RIDGE = "ridge"
IS_ANCHOR = "is-anchor"
STAGES = "stages"  # list[int] evolution stage of every partition, indexed by partition id

# ConfigRecord keys node → platform.
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
PRIOR = "prior"
PRIOR_KIND = "prior-kind"
FEATURE_DIM = "feature-dim"
NUM_SAMPLES = "num-samples"
REPORTED_UNIFORMITY = "reported-uniformity"
RESIDUAL = "residual"
EMBED_SECONDS = "embed-seconds"
CACHED = "cached"  # number of samples whose features came from the node's cache
STAGE = "stage"  # the evolution stage whose prior the node used
NUM_STAGES = "num-stages"  # length of the node's evolution path
