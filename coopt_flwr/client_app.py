"""CoOpt ClientApp: a participant with its own prior model (thin; the logic is in participant.py).

Which prior a participant holds comes from, in order: the node config key ``prior`` (a real
deployment), else the run-config list ``priors`` / ``prior-mix`` indexed by ``partition-id``
(a simulation, whose virtual nodes cannot carry custom node config). Either may be an evolution
path ``"a > b > c"``; the platform's message says which stage of it to use this round.

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

from coopt_flwr import protocol as P
from coopt_flwr.config import Settings
from coopt_flwr.datasets import create_dataset
from coopt_flwr.evolution import parse_path
from coopt_flwr.participant import FeatureCache, aligned_upload, uniformity_report
from coopt_flwr.priors import create_prior

_CACHE_RECORD = "coopt-feature-cache"
_CACHE_META = "coopt-feature-cache-meta"


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
    path = parse_path(str(cfg["prior"])) if "prior" in cfg else settings.path_for(partition)
    stages = list(config[P.STAGES]) if P.STAGES in config else []
    stage = int(stages[partition]) if partition < len(stages) else 0
    if not 0 <= stage < len(path):
        raise ValueError(
            f"the platform asks partition {partition} for evolution stage {stage}, "
            f"its path has {len(path)} stage(s): {path}"
        )
    return _Identity(partition, num_partitions, path, stage)


def _load_cache(context: Context, spec: str) -> FeatureCache:
    """Features cached in the node's state survive across rounds (and messages)."""
    state = context.state
    if _CACHE_META in state and state[_CACHE_META]["prior"] == spec:
        arrays = state[_CACHE_RECORD]
        return FeatureCache(prior=spec, ids=arrays["ids"].numpy(), features=arrays["features"].numpy())
    return FeatureCache(prior=spec)


def _store_cache(context: Context, cache: FeatureCache) -> None:
    if cache.features is None:
        return
    context.state[_CACHE_RECORD] = ArrayRecord({"ids": Array(cache.ids), "features": Array(cache.features)})
    context.state[_CACHE_META] = ConfigRecord({"prior": cache.prior})


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

    def setup(msg: Message, context: Context) -> tuple[_Identity, Any, Any, FeatureCache]:
        settings = Settings.from_config(context.run_config, overrides)
        config = msg.content[P.CONFIG]
        who = _identity(settings, context, config)
        seed = int(config[P.SEED])
        data_root = str(config[P.DATA_ROOT]) or None
        data = create_dataset(str(config[P.DATASET]), data_root=data_root)
        # Each participant's random-init prior gets its own seed: the same spec on two
        # partitions means two different home-made models, as in a real federation.
        prior = create_prior(
            who.spec,
            seed=seed + who.partition,
            batch_size=settings.batch_size,
            device=settings.device or None,
        )
        return who, data, prior, _load_cache(context, who.spec)

    @app.query(P.ACTION_UNIFORMITY)
    def report_uniformity(msg: Message, context: Context) -> Message:
        who, data, prior, cache = setup(msg, context)
        partition = who.partition
        config, arrays = msg.content[P.CONFIG], msg.content[P.ARRAYS]
        rep = uniformity_report(
            prior,
            data,
            arrays[P.SHARED_IDS].numpy(),
            int(config[P.TARGET_DIM]),
            int(config[P.SEED]),
            cache,
            progress=_progress(partition, "uniformity"),
        )
        _store_cache(context, cache)
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
            P.EMBED_SECONDS: rep.seconds,
            P.CACHED: rep.cached,
        }
        return _reply(msg, node, {P.SHARED_TARGETS: rep.shared_targets})

    @app.train(P.ACTION_ALIGN)
    def align(msg: Message, context: Context) -> Message:
        who, data, prior, cache = setup(msg, context)
        config, arrays = msg.content[P.CONFIG], msg.content[P.ARRAYS]
        up = aligned_upload(
            prior,
            data,
            shard_ids=arrays[P.SHARD_IDS].numpy(),
            shared_ids=arrays[P.SHARED_IDS].numpy(),
            anchor_targets=arrays[P.ANCHOR_TARGETS].numpy(),
            is_anchor=bool(config[P.IS_ANCHOR]),
            target_dim=int(config[P.TARGET_DIM]),
            seed=int(config[P.SEED]),
            ridge=float(config[P.RIDGE]),
            cache=cache,
            progress=_progress(who.partition, "align"),
        )
        _store_cache(context, cache)
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
