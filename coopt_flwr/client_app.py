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

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from coopt_flwr.config import Settings, check_node_prior
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol.participant import (
    AlignedUpload,
    FeatureCache,
    UniformityReport,
    aligned_upload,
    check_shard_ids,
    shared_set,
    uniformity_report,
)
from coopt_flwr.registry.datasets import ImageData, create_dataset
from coopt_flwr.registry.prior_options import uses_seed
from coopt_flwr.registry.priors import Prior, check_prior, create_prior
from coopt_flwr.registry.spec import parse_spec

_CACHE_RECORD = "coopt-feature-cache"
_CACHE_META = "coopt-feature-cache-meta"
# Caches by source: "data" holds features of the ids of the data the node embeds (the
# platform's D, or the node's own data), "shared" those of the S images the platform sends in
# local data mode (their ids index that small set, not the node's data).


# --- who this node is ---------------------------------------------------------------------


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
    # A deployed node's own prior is checked like the run-config's (one line naming the key).
    path = check_node_prior(cfg[P.NODE_PRIOR]) if P.NODE_PRIOR in cfg else settings.path_for(partition)
    stages = list(config[P.STAGES]) if P.STAGES in config else []
    stage = int(stages[partition]) if partition < len(stages) else 0
    if not 0 <= stage < len(path):
        raise ValueError(
            f"the platform asks partition {partition} for evolution stage {stage}, "
            f"its path has {len(path)} stage(s): {path}"
        )
    return _Identity(partition, num_partitions, path, stage)


def _participant_name(context: Context, partition: int) -> str:
    return str(context.node_config.get(P.NODE_NAME, "")) or f"partition-{partition}"


# --- the node's feature cache (context.state) ---------------------------------------------


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


# --- decoding a platform message ----------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One platform message, decoded: who answers it, with which data and prior."""

    who: _Identity
    config: ConfigRecord
    arrays: ArrayRecord
    data: ImageData  # the data the node embeds: the platform's D, or its own (local data mode)
    prior: Prior
    local: bool  # local data mode: S arrives as images in the message
    settings: Settings  # the run-config: the platform checks uploads with the same alignment keys

    @property
    def target_dim(self) -> int:
        return int(self.config[P.TARGET_DIM])

    @property
    def seed(self) -> int:
        return int(self.config[P.SEED])


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


def _job(msg: Message, context: Context, overrides: Mapping[str, Any] | None) -> _Job:
    settings = Settings.from_config(context.run_config, overrides)
    config = msg.content[P.CONFIG]
    who = _identity(settings, context, config)
    local = str(config.get(P.DATA_MODE, "platform")) == "local"
    if local:
        data = _local_data(context)
    else:
        data = create_dataset(str(config[P.DATASET]), data_root=str(config[P.DATA_ROOT]) or None)
    # Each participant's random-init prior gets its own seed: the same spec on two
    # partitions means two different home-made models, as in a real federation.
    prior = create_prior(
        who.spec,
        seed=int(config[P.SEED]) + who.partition,
        batch_size=settings.batch_size,
        device=settings.device or None,
    )
    return _Job(who, config, msg.content[P.ARRAYS], data, prior, local, settings)


def _shared(job: _Job) -> tuple[ImageData, np.ndarray, str]:
    """S: the data holding it, the ids indexing that data, and the cache source of its features.

    The platform names S by ids of its D; in local data mode it also sends the images, which
    are then indexed ``0 .. |S|-1`` and cached apart from the node's own data.
    """
    shared_ids = job.arrays[P.SHARED_IDS].numpy()
    if not job.local:
        return job.data, shared_ids, "data"
    arrays = job.arrays
    if P.SHARED_IMAGES not in arrays:
        raise ValueError("local data mode: the platform's message carries no shared-set images")
    labels = arrays[P.SHARED_LABELS].numpy() if P.SHARED_LABELS in arrays else None
    return shared_set(arrays[P.SHARED_IMAGES].numpy(), labels), np.arange(len(shared_ids)), "shared"


def _progress(partition: int, step: str, every: float = 10.0):
    """A progress callback printing at most every ``every`` seconds (and at the end)."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if (done == total and total >= 1000) or now - last[0] >= every:
            last[0] = now
            print(f"[participant {partition}] {step}: embedded {done}/{total}", flush=True)

    return report


# --- the shared set's features of seed-free priors, once per process ------------------------
# In a simulation one worker process answers for hundreds of virtual participants, and every
# participant holding the same pretrained prior embeds the same S: identical work with an
# identical result. The first to embed S from scratch leaves the features here; the others
# start from them. Only a node that would itself embed all of S from scratch uses (or leaves)
# an entry, so every reply is exactly what the node computes alone.
_SHARED_MEMO: OrderedDict[tuple, np.ndarray] = OrderedDict()
_SHARED_MEMO_SIZE = 8  # entries of (|S|, l_k) float32: a few MiB each
_SHARED_MEMO_LOCK = threading.Lock()


def _shared_memo_key(job: _Job, shared: ImageData, shared_ids: np.ndarray, source: str) -> tuple | None:
    """What S's features depend on, for a seed-free prior; None when the prior uses its seed."""
    spec = parse_spec(job.who.spec)
    if uses_seed(spec.name, check_prior(spec)):
        return None
    if source == "data":  # platform data mode: S names ids of the platform's D
        data: tuple = ("data", str(job.config[P.DATASET]), str(job.config[P.DATA_ROOT]))
    else:  # local data mode: S's images came in the message
        digest = hashlib.blake2b(np.ascontiguousarray(shared.images).tobytes(), digest_size=16)
        if shared.labels is not None:
            digest.update(np.ascontiguousarray(shared.labels).tobytes())
        data = ("shared", digest.hexdigest())
    ids = hashlib.blake2b(np.ascontiguousarray(shared_ids, dtype=np.int64).tobytes(), digest_size=16)
    settings = job.settings
    return (spec.text, settings.device, settings.batch_size, data, ids.hexdigest())


def _memo_get(key: tuple) -> np.ndarray | None:
    with _SHARED_MEMO_LOCK:
        rows = _SHARED_MEMO.get(key)
        if rows is not None:
            _SHARED_MEMO.move_to_end(key)
        return rows


def _memo_put(key: tuple, rows: np.ndarray) -> None:
    with _SHARED_MEMO_LOCK:
        _SHARED_MEMO[key] = rows
        while len(_SHARED_MEMO) > _SHARED_MEMO_SIZE:
            _SHARED_MEMO.popitem(last=False)


# --- encoding the replies -----------------------------------------------------------------


def _reply(msg: Message, node: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Message:
    content = RecordDict(
        {
            P.NODE: ConfigRecord(dict(node)),
            P.ARRAYS: ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
        }
    )
    return Message(content=content, reply_to=msg)


def _uniformity_node(job: _Job, rep: UniformityReport, name: str) -> dict[str, Any]:
    who, prior = job.who, job.prior
    return {
        P.PARTITION_ID: who.partition,
        P.NUM_PARTITIONS: who.num_partitions,
        P.STAGE: who.stage,
        P.NUM_STAGES: len(who.path),
        P.PRIOR: prior.spec,
        P.PRIOR_KIND: prior.kind,
        P.FEATURE_DIM: prior.feature_dim,
        P.NUM_SAMPLES: len(job.data),
        P.REPORTED_UNIFORMITY: rep.uniformity,
        P.REPORTED_TARGET_UNIFORMITY: rep.target_uniformity,
        P.NAME: name,
        P.EMBED_SECONDS: rep.seconds,
        P.CACHED: rep.cached,
    }


def _align_node(job: _Job, up: AlignedUpload) -> dict[str, Any]:
    return {
        P.PARTITION_ID: job.who.partition,
        P.STAGE: job.who.stage,
        P.RESIDUAL: up.residual,
        P.EMBED_SECONDS: up.seconds,
        P.CACHED: up.cached,
    }


# --- the two message handlers -------------------------------------------------------------


def report_uniformity(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """``query.uniformity``: embed S, project it, reply with the targets and V."""
    job = _job(msg, context, overrides)
    shared, shared_ids, source = _shared(job)
    cache = _load_cache(context, job.who.spec, source)
    memo = _shared_memo_key(job, shared, shared_ids, source)
    fresh = memo is not None and not cache.lookup(shared_ids)[0].any()
    if fresh:
        rows = _memo_get(memo)
        if rows is not None:
            cache.add(shared_ids, rows)
    rep = uniformity_report(
        job.prior,
        shared,
        shared_ids,
        job.target_dim,
        job.seed,
        cache,
        progress=_progress(job.who.partition, "uniformity"),
        standardize=job.settings.standardize_targets,
    )
    if fresh and rep.cached == 0:  # embedded from scratch: what any holder of this prior gets
        _memo_put(memo, cache.lookup(shared_ids)[1])
    _store_cache(context, cache, source)
    node = _uniformity_node(job, rep, _participant_name(context, job.who.partition))
    return _reply(msg, node, {P.SHARED_TARGETS: rep.shared_targets})


def align(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """``train.align``: align to the anchor on S, reply with the aligned targets of the shard."""
    job = _job(msg, context, overrides)
    shard_ids = job.arrays[P.SHARD_IDS].numpy()
    check_shard_ids(shard_ids, len(job.data))
    shared, shared_ids, source = _shared(job)
    cache = _load_cache(context, job.who.spec, "data")
    # In platform data mode S is part of D: one cache serves both.
    shared_cache = cache if source == "data" else _load_cache(context, job.who.spec, source)
    up = aligned_upload(
        job.prior,
        job.data,
        shard_ids=shard_ids,
        shared_ids=shared_ids,
        anchor_targets=job.arrays[P.ANCHOR_TARGETS].numpy(),
        is_anchor=bool(job.config[P.IS_ANCHOR]),
        target_dim=job.target_dim,
        seed=job.seed,
        ridge=float(job.config[P.RIDGE]),
        cache=cache,
        progress=_progress(job.who.partition, "align"),
        shared_data=shared,
        shared_cache=shared_cache,
        method=job.settings.alignment,
        standardize=job.settings.standardize_targets,
    )
    _store_cache(context, cache, "data")
    if shared_cache is not cache:
        _store_cache(context, shared_cache, source)
    arrays = {P.IDS: up.ids, P.TARGETS: up.targets, P.SHARED_ALIGNED: up.shared_aligned}
    return _reply(msg, _align_node(job, up), arrays)


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """Build the ClientApp; ``overrides`` stand in for the run-config (programmatic launches)."""
    app = ClientApp()

    @app.query(P.ACTION_UNIFORMITY)
    def query_uniformity(msg: Message, context: Context) -> Message:
        return report_uniformity(msg, context, overrides)

    @app.train(P.ACTION_ALIGN)
    def train_align(msg: Message, context: Context) -> Message:
        return align(msg, context, overrides)

    return app


app = make_client_app()
