"""CoOpt ClientApp: a participant with its own prior model (thin; the logic is in participant.py).

Which prior a participant holds comes from, in order: the node config key ``prior`` (a real
deployment), else the run-config list ``priors`` / ``prior-mix`` indexed by ``partition-id``
(a simulation, whose virtual nodes cannot carry custom node config). Either may be an evolution
path ``"a > b > c"``; the platform's message says which stage of it to use this round.

In local data mode (run-config ``data-mode="local"``) the node's images come from its node
config key ``data`` (a data-set spec: ``npz:/path``, ``folder:/path`` ...) and never leave
the node; the shared set S arrives as images in the platform's messages.

Features are cached in the node's ``context.state`` under the spec of the prior that made them:
a node that upgrades drops its old features and embeds afresh, a node that keeps its prior
reuses them round after round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from coopt_flwr.config import Settings
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol.evolution import parse_path
from coopt_flwr.protocol.participant import FeatureCache, aligned_upload, uniformity_report
from coopt_flwr.registry.datasets import ImageData, create_dataset
from coopt_flwr.registry.priors import create_prior

_CACHE_RECORD = "coopt-feature-cache"
_CACHE_META = "coopt-feature-cache-meta"
# Caches by source: "data" holds features of the ids of the data the node embeds (the
# platform's D, or the node's own data), "shared" those of the S images the platform sends in
# local data mode (their ids index that small set, not the node's data).


@dataclass(frozen=True)
class _Identity:
    """Who this node is in the protocol and which prior it uses this round."""

    partition: int
    num_partitions: int
    path: tuple[str, ...]
    stage: int

    @property
    def spec(self) -> str:
        return self.path[self.stage]


def _identity(settings: Settings, context: Context, config: ConfigRecord) -> _Identity:
    cfg = context.node_config
    partition = int(cfg.get("partition-id", 0))
    num_partitions = int(cfg.get("num-partitions", 1))
    path = parse_path(str(cfg[P.NODE_PRIOR])) if P.NODE_PRIOR in cfg else settings.path_for(partition)
    stages = list(config[P.STAGES]) if P.STAGES in config else []
    stage = int(stages[partition]) if partition < len(stages) else 0
    if not 0 <= stage < len(path):
        raise ValueError(
            f"the platform asks partition {partition} for evolution stage {stage}, "
            f"its path has {len(path)} stage(s): {path}"
        )
    return _Identity(partition, num_partitions, path, stage)


def _load_cache(context: Context, spec: str, source: str = "data") -> FeatureCache:
    """Features cached in the node's state survive across rounds (and messages)."""
    state, record, meta = context.state, f"{_CACHE_RECORD}-{source}", f"{_CACHE_META}-{source}"
    if meta in state and state[meta]["prior"] == spec:
        arrays = state[record]
        return FeatureCache(prior=spec, ids=arrays["ids"].numpy(), features=arrays["features"].numpy())
    return FeatureCache(prior=spec)


def _store_cache(context: Context, cache: FeatureCache, source: str = "data") -> None:
    if cache.features is None:
        return
    record, meta = f"{_CACHE_RECORD}-{source}", f"{_CACHE_META}-{source}"
    context.state[record] = ArrayRecord({"ids": Array(cache.ids), "features": Array(cache.features)})
    context.state[meta] = ConfigRecord({"prior": cache.prior})


def _local_data(context: Context) -> ImageData:
    """The node's own data set (local data mode), named by its node config."""
    cfg = context.node_config
    if P.NODE_DATA not in cfg or not str(cfg[P.NODE_DATA]).strip():
        raise ValueError(
            "data-mode is 'local' but this SuperNode has no node config key 'data' naming its own "
            'data set (e.g. --node-config \'data="npz:/path/train.npz" prior="efficientnet_lite0"\')'
        )
    root = str(cfg.get(P.NODE_DATA_ROOT, "")) or None
    return create_dataset(str(cfg[P.NODE_DATA]), data_root=root)


def _shared_data(arrays: ArrayRecord) -> ImageData:
    """S as the platform sent it (local data mode)."""
    if P.SHARED_IMAGES not in arrays:
        raise ValueError("local data mode: the platform's message carries no shared-set images")
    images = arrays[P.SHARED_IMAGES].numpy()
    labels = arrays[P.SHARED_LABELS].numpy() if P.SHARED_LABELS in arrays else None
    classes = int(labels.max()) + 1 if labels is not None and len(labels) else None
    return ImageData(name="shared-set", images=images, labels=labels, num_classes=classes)


def _participant_name(context: Context, partition: int) -> str:
    return str(context.node_config.get(P.NODE_NAME, "")) or f"partition-{partition}"


def _progress(partition: int, step: str, every: float = 10.0):
    """A progress callback printing at most every ``every`` seconds (and at the end)."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if (done == total and total >= 1000) or now - last[0] >= every:
            last[0] = now
            print(f"[participant {partition}] {step}: embedded {done}/{total}", flush=True)

    return report


def _reply(msg: Message, node: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Message:
    content = RecordDict(
        {
            P.NODE: ConfigRecord(dict(node)),
            P.ARRAYS: ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
        }
    )
    return Message(content=content, reply_to=msg)


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """Build the ClientApp; ``overrides`` stand in for the run-config (programmatic launches)."""
    app = ClientApp()

    def setup(msg: Message, context: Context) -> tuple[_Identity, Any, Any, str]:
        settings = Settings.from_config(context.run_config, overrides)
        config = msg.content[P.CONFIG]
        who = _identity(settings, context, config)
        seed = int(config[P.SEED])
        mode = str(config.get(P.DATA_MODE, "platform"))
        if mode == "local":
            data = _local_data(context)
        else:
            data = create_dataset(str(config[P.DATASET]), data_root=str(config[P.DATA_ROOT]) or None)
        # Each participant's random-init prior gets its own seed: the same spec on two
        # partitions means two different home-made models, as in a real federation.
        prior = create_prior(
            who.spec,
            seed=seed + who.partition,
            batch_size=settings.batch_size,
            device=settings.device or None,
        )
        return who, data, prior, mode

    @app.query(P.ACTION_UNIFORMITY)
    def report_uniformity(msg: Message, context: Context) -> Message:
        who, data, prior, mode = setup(msg, context)
        partition = who.partition
        config, arrays = msg.content[P.CONFIG], msg.content[P.ARRAYS]
        shared_ids = arrays[P.SHARED_IDS].numpy()
        source = "shared" if mode == "local" else "data"
        shared = _shared_data(arrays) if mode == "local" else data
        cache = _load_cache(context, who.spec, source)
        rep = uniformity_report(
            prior,
            shared,
            np.arange(len(shared_ids)) if mode == "local" else shared_ids,
            int(config[P.TARGET_DIM]),
            int(config[P.SEED]),
            cache,
            progress=_progress(partition, "uniformity"),
        )
        _store_cache(context, cache, source)
        node = {
            P.PARTITION_ID: partition,
            P.NUM_PARTITIONS: who.num_partitions,
            P.STAGE: who.stage,
            P.NUM_STAGES: len(who.path),
            P.PRIOR: prior.spec,
            P.PRIOR_KIND: prior.kind,
            P.FEATURE_DIM: prior.feature_dim,
            P.NUM_SAMPLES: len(data),
            P.REPORTED_UNIFORMITY: rep.uniformity,
            P.REPORTED_TARGET_UNIFORMITY: rep.target_uniformity,
            P.NAME: _participant_name(context, partition),
            P.EMBED_SECONDS: rep.seconds,
            P.CACHED: rep.cached,
        }
        return _reply(msg, node, {P.SHARED_TARGETS: rep.shared_targets})

    @app.train(P.ACTION_ALIGN)
    def align(msg: Message, context: Context) -> Message:
        who, data, prior, mode = setup(msg, context)
        config, arrays = msg.content[P.CONFIG], msg.content[P.ARRAYS]
        shard_ids = arrays[P.SHARD_IDS].numpy()
        if len(shard_ids) and (shard_ids.min() < 0 or shard_ids.max() >= len(data)):
            raise ValueError(f"shard ids outside this node's {len(data)} samples")
        shared_ids = arrays[P.SHARED_IDS].numpy()
        cache = _load_cache(context, who.spec, "data")
        shared, shared_cache = data, cache
        if mode == "local":
            shared, shared_cache = _shared_data(arrays), _load_cache(context, who.spec, "shared")
            shared_ids = np.arange(len(shared_ids))
        up = aligned_upload(
            prior,
            data,
            shard_ids=shard_ids,
            shared_ids=shared_ids,
            anchor_targets=arrays[P.ANCHOR_TARGETS].numpy(),
            is_anchor=bool(config[P.IS_ANCHOR]),
            target_dim=int(config[P.TARGET_DIM]),
            seed=int(config[P.SEED]),
            ridge=float(config[P.RIDGE]),
            cache=cache,
            progress=_progress(who.partition, "align"),
            shared_data=shared,
            shared_cache=shared_cache,
        )
        _store_cache(context, cache, "data")
        if mode == "local":
            _store_cache(context, shared_cache, "shared")
        node = {
            P.PARTITION_ID: who.partition,
            P.STAGE: who.stage,
            P.RESIDUAL: up.residual,
            P.EMBED_SECONDS: up.seconds,
            P.CACHED: up.cached,
        }
        return _reply(msg, node, {P.IDS: up.ids, P.TARGETS: up.targets, P.SHARED_ALIGNED: up.shared_aligned})

    return app


app = make_client_app()
