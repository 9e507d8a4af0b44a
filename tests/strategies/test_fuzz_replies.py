"""Fuzz of the platform's reply handling: a hostile reply never crashes it and is never merged.

Each example runs one real round of :class:`strategies.coopt.CoOptStrategy` over the
in-process grid of :mod:`harness`, the real ClientApp answering, with one participant's
``query.uniformity`` or ``train.align`` replies rewritten by a generated mutation
(:func:`harness.replace_reply`) and sent over the wire (deflated and inflated, as a
SuperNode's reply is): the platform reads it on the path every real reply takes
(``_exchange`` → ``_read_uniformity`` / ``_merge_reply``). The mutations cover every field
the platform reads: each field of the node ConfigRecord (missing, of the wrong type, out of
range, non-finite, a false claim), each array (wrong dtype or shape, NaN/inf, huge or tiny
scale, negative, out-of-range, duplicated or foreign ids, npy bytes whose header lies) and
the records themselves (missing, of the other record type).

The property (:func:`_check_round`): the run finishes; the hostile participant ends
rejected with its reason in the round result and in ``summary.json``; every honest
participant is accepted; D' holds every id exactly once or reports it missing, its targets
are finite and none of its rows comes from the hostile participant. Conversely, lossless
re-encodings of an honest reply (float64 or big-endian targets, Fortran order, int32 ids,
rows in another order, unknown extra keys) are accepted.

The round is small (|D| = 600 digits, |S| = 60, n = 8, cheap ``counting:`` priors) so an
example takes a fraction of a second; the knobs that change how a rejection is handled
(reassignment on or off, redundancy, uploads in parts) and the hostile partition (the
anchor or not) are drawn with each example.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.clientapp import ClientApp
from harness import Change, InProcessGrid, NoSettleStrategy, register_counting_prior, replace_reply
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.store.storage import load_optimized
from strategies import Status
from strategies.coopt import MAX_PARTITIONS, RunResult

PRIORS = "counting:a?dim=24,counting:b?dim=20,human,counting:c?dim=28"
NUM_NODES = 4
NUM_SAMPLES = 600  # |D|: the platform indexes the first 600 digits
TARGET_DIM = 8
SHARED = 60  # |S|: shared-fraction 0.1 of |D|
INT64 = (-(2**63), 2**63 - 1)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

register_counting_prior()


@cache
def _app() -> ClientApp:
    return make_client_app({"priors": PRIORS})


# ------------------------------------------------------------------ one round, and its property
@dataclass
class Outcome:
    """What one round left: its result, D' and ``summary.json`` as written."""

    result: RunResult
    merged: dict[str, np.ndarray]
    summary_text: str
    hostile_node: int
    max_reassign: int


@dataclass(frozen=True)
class Knobs:
    """The run-config keys drawn per example that change how a rejection is handled."""

    hostile: int  # the partition whose replies are rewritten
    max_reassign: int
    redundancy: int
    upload_max_samples: int


knobs = st.builds(
    Knobs,
    hostile=st.integers(0, NUM_NODES - 1),
    max_reassign=st.sampled_from([0, 1]),
    redundancy=st.sampled_from([1, 2]),
    upload_max_samples=st.sampled_from([4096, 64]),
)


def _run(knob: Knobs, kind: str, change: Change) -> Outcome:
    """One round with ``knob.hostile``'s ``kind`` replies rewritten by ``change``."""
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "priors": PRIORS,
            "output-dir": str(Path(tmp) / "out"),
            "target-dim": TARGET_DIM,
            "node-wait-timeout": 5.0,
            "step-timeout": 60.0,
            "g-max-samples": 128,
            "shard-max-residual": 100.0,  # no participant gated: every one gets an align request
            "max-reassign": knob.max_reassign,
            "redundancy": knob.redundancy,
            "upload-max-samples": knob.upload_max_samples,
        }
        run_settings = Settings.from_config({}, config)
        grid = InProcessGrid(_app(), NUM_NODES, fault=replace_reply(knob.hostile, kind, change))
        strategy = NoSettleStrategy(run_settings, NUM_SAMPLES, log=lambda _: None, poll_interval=0.001)
        assert len(strategy.shared_ids) == SHARED
        result = strategy.run(grid)
        merged = load_optimized(run_settings.output_dir)
        summary_text = (run_settings.output_dir / "summary.json").read_text()
    hostile_node = next(n for n, c in grid.contexts.items() if c.node_config["partition-id"] == knob.hostile)
    return Outcome(result, merged, summary_text, hostile_node, knob.max_reassign)


def _strict_json(constant: str) -> Any:
    raise ValueError(f"summary.json holds {constant}: not JSON")


def _check_round(out: Outcome, accepted: bool = False) -> None:
    """The property of every example (``accepted``: the reply was an honest one, re-encoded)."""
    round_ = out.result.rounds[0]
    records = {n.node_id: n for n in round_.nodes}
    assert len(records) == NUM_NODES
    bad = records.pop(out.hostile_node)
    if accepted:
        assert bad.status is Status.OK, bad.reason
    else:
        assert bad.status is Status.REJECTED and bad.reason, (bad.status, bad.reason)
        assert bad.reason.startswith(("uniformity: ", "align: ")), bad.reason
        assert bad.samples == 0  # what it sent before its rejection was taken out again
    honest = {n.partition_id: n for n in records.values()}
    assert {p: n.reason for p, n in honest.items() if n.status is not Status.OK} == {}

    # summary.json records the same, as strict JSON (no NaN or inf a hostile value put there)
    summary = json.loads(out.summary_text, parse_constant=_strict_json)
    parts = {int(p["node-id"]): p for p in summary["participants"]}
    assert (parts[out.hostile_node]["status"], parts[out.hostile_node]["reason"]) == (bad.status, bad.reason)

    # D': every id exactly once or reported missing, finite, only from accepted participants
    ids, missing = out.merged["ids"], np.asarray(summary["missing-ids"], dtype=np.int64)
    np.testing.assert_array_equal(np.sort(np.concatenate([ids, missing])), np.arange(NUM_SAMPLES))
    assert np.all(np.isfinite(out.merged["targets"]))
    ok = {n.partition_id for n in round_.nodes if n.status is Status.OK}
    assert set(np.unique(out.merged["participant"]).tolist()) <= ok
    # every merged contribution is one an accepted participant counts as its own (with
    # redundancy, `participant` names only a sample's first contributor: this count sees
    # a rejected participant's rows left in a mean)
    assert sum(n.samples for n in round_.nodes if n.status is Status.OK) == int(
        out.merged["contributions"].sum()
    )
    if out.max_reassign:  # a rejected participant's share went to the others
        assert summary["complete"] and len(missing) == 0


# ------------------------------------------------------------------ mutations
class Mutation:
    """A named rewrite of a reply (the name is what a failing example prints).

    A plain class, not a dataclass: Hypothesis prints a dataclass field by field.
    """

    def __init__(self, name: str, change: Change) -> None:
        self.name, self.change = name, change

    def __repr__(self) -> str:
        return self.name


def _set(key: str, value: Any) -> Change:
    def change(node: dict, arrays: dict) -> None:
        node[key] = value

    return change


def _drop(key: str, where: str) -> Change:
    def change(node: dict, arrays: dict) -> None:
        (node if where == "node" else arrays).pop(key)

    return change


def _shift(key: str, delta: float) -> Change:
    """A false claim: the honest value of a float field moved by ``delta``."""

    def change(node: dict, arrays: dict) -> None:
        node[key] = float(node[key]) + delta

    return change


def _edit(key: str, fn: Callable[[np.ndarray], Any]) -> Change:
    """``arrays[key]`` replaced by ``fn`` of it (a numpy array, or a raw ``flwr.app.Array``)."""

    def change(node: dict, arrays: dict) -> None:
        arrays[key] = fn(np.array(arrays[key]))

    return change


def _content(fn: Callable[[dict, dict], RecordDict]) -> Change:
    """The whole reply content replaced by ``fn(node, arrays)``."""

    def change(node: dict, arrays: dict) -> RecordDict:
        return fn(node, arrays)

    return change


# -- values of the wrong type, by the type the platform expects
finite = st.floats(allow_nan=False, allow_infinity=False)
not_int = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # 1.0 too: an int field is an int
    st.text(max_size=6),  # "3" too
    st.binary(max_size=6),
    st.booleans(),  # True == 1, still not an int
    st.lists(st.integers(-3, 3), max_size=3),
)
not_float = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.booleans(),
    st.lists(finite, min_size=1, max_size=3),
)
not_str = st.one_of(
    st.integers(*INT64),
    finite,
    st.binary(max_size=6),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)


def _outside(low: int, high: int) -> st.SearchStrategy[int]:
    """int64 values outside [low, high] (either side that exists)."""
    sides = []
    if low > INT64[0]:
        sides.append(st.integers(INT64[0], low - 1))
    if high < INT64[1]:
        sides.append(st.integers(high + 1, INT64[1]))
    return st.one_of(*sides)


def _field(key: str, bad: st.SearchStrategy[Any], required: bool = True) -> st.SearchStrategy[Mutation]:
    """A field set to a value drawn from ``bad``, or left out when the platform needs it."""
    values = bad.map(lambda v: Mutation(f"{key} = {v!r}", _set(key, v)))
    if not required:
        return values
    return st.one_of(values, st.just(Mutation(f"no {key}", _drop(key, "node"))))


def uniformity_fields(hostile: int) -> st.SearchStrategy[Mutation]:
    """Every node field of a uniformity reply, wrong."""
    return st.one_of(
        _field(P.PARTITION_ID, st.one_of(not_int, _outside(0, NUM_NODES - 1))),
        # a federation too small for its own partition id, or past the platform's bound
        _field(P.NUM_PARTITIONS, st.one_of(not_int, _outside(hostile + 1, MAX_PARTITIONS))),
        _field(P.STAGE, st.one_of(not_int, _outside(0, 0)), required=False),  # absent: stage 0
        _field(P.NUM_STAGES, st.one_of(not_int, st.integers(INT64[0], 0)), required=False),
        _field(P.PRIOR, not_str),
        _field(P.PRIOR_KIND, not_str),
        _field(P.NAME, not_str, required=False),  # absent: partition-<id>
        _field(P.FEATURE_DIM, st.one_of(not_int, st.integers(INT64[0], 0))),
        _field(P.NUM_SAMPLES, st.one_of(not_int, st.integers(INT64[0], 0))),
        _field(P.REPORTED_UNIFORMITY, not_float),
        _field(P.REPORTED_TARGET_UNIFORMITY, not_float),
        st.floats(0.01, 10).flatmap(
            lambda d: st.sampled_from([d, -d]).map(
                lambda d: Mutation(
                    f"reported-target-uniformity off by {d:g}", _shift(P.REPORTED_TARGET_UNIFORMITY, d)
                )
            )
        ),
        _field(P.EMBED_SECONDS, st.one_of(not_float, st.floats(max_value=-1e-9, allow_infinity=False))),
        _field(P.CACHED, st.one_of(not_int, _outside(0, SHARED))),
    )


def align_fields(part: int) -> st.SearchStrategy[Mutation]:
    """Every node field of an align reply the platform reads, wrong (``part``: the most rows
    one align request asks for; ``cached`` may count them and S)."""
    return st.one_of(
        _field(P.STAGE, st.one_of(not_int, _outside(0, 0)), required=False),
        _field(P.RESIDUAL, not_float),
        st.floats(0.01, 10).map(lambda d: Mutation(f"residual off by {d:g}", _shift(P.RESIDUAL, d))),
        _field(P.EMBED_SECONDS, st.one_of(not_float, st.floats(max_value=-1e-9, allow_infinity=False))),
        _field(P.CACHED, st.one_of(not_int, _outside(0, SHARED + part))),
    )


# -- arrays
def _npy(shape: tuple[int, ...], descr: str = "<f4", payload: int = 0) -> Array:
    """An Array whose npy header says ``shape`` of ``descr`` but whose data holds ``payload`` bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return Array(dtype="float32", shape=shape, stype="numpy.ndarray", data=buf.getvalue() + b"\0" * payload)


RAW = {  # raw Arrays no numpy array serializes to
    "a header claiming 10^12 x 10^6 floats": lambda a: _npy((10**12, 10**6)),
    "a header claiming 2^40 floats, 8 bytes sent": lambda a: _npy((2**40,), payload=8),
    "a header of an object array": lambda a: _npy(a.shape, "|O", payload=8 * a.size),
    "truncated data": lambda a: Array(
        dtype="float32", shape=a.shape, stype="numpy.ndarray", data=Array(a).data[:-4]
    ),
    "garbage bytes": lambda a: Array(
        dtype="float32", shape=a.shape, stype="numpy.ndarray", data=b"\x93NUMPY"
    ),
    "a torch stype": lambda a: Array(
        dtype="float32", shape=a.shape, stype="torch.Tensor", data=Array(a).data
    ),
}

WRONG_DTYPES = {
    "int32": lambda a: a.astype(np.int32),
    "int64": lambda a: np.round(a).astype(np.int64),
    "bool": lambda a: a > 0,
    "complex64": lambda a: a.astype(np.complex64),
    "str": lambda a: a.astype("U8"),
    "uint8": lambda a: a.astype(np.uint8),
}


def _transposed(a: np.ndarray) -> np.ndarray:
    # a square part (n rows of width n) would keep its shape: one column short instead
    return np.ascontiguousarray(a.T) if a.shape[0] != a.shape[1] else a[:, :-1]


WRONG_SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "an extra trailing dim": lambda a: a[..., None],
    "an extra leading dim": lambda a: a[None],
    "flattened": lambda a: a.reshape(-1),
    "one column short": lambda a: a[:, :-1],
    "one column more": lambda a: np.concatenate([a, a[:, :1]], axis=1),
    "one row short": lambda a: a[:-1],
    "one row more": lambda a: np.concatenate([a, a[:1]]),
    "no rows": lambda a: a[:0],
    "transposed": _transposed,
    "a scalar": lambda a: np.float32(1.0).reshape(()),
}


def _with_value(value: float, index: int) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        out = a.astype(np.float64)
        out.flat[index % out.size] = value
        return out

    return fn


def _row_scaled(factor: float, index: int) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[index % len(out)] *= factor
        return out

    return fn


def target_arrays(key: str, *, values: bool) -> st.SearchStrategy[Mutation]:
    """A (rows, n) float target array ``key`` made malformed: dtype, shape, npy bytes, missing,
    non-finite values; with ``values``, also scales the platform must refuse."""
    table: dict[str, Callable[[np.ndarray], Any]] = {}
    table.update({f"{key} as {n}": fn for n, fn in WRONG_DTYPES.items()})
    table.update({f"{key} {n}": fn for n, fn in WRONG_SHAPES.items()})
    table.update({f"{key} as {n}": fn for n, fn in RAW.items()})
    named = st.sampled_from(sorted(table)).map(lambda n: Mutation(n, _edit(key, table[n])))
    non_finite = st.tuples(
        st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e39, -1e300]), st.integers(0, 10**6)
    ).map(lambda v: Mutation(f"{key}[{v[1]}] = {v[0]:g}", _edit(key, _with_value(*v))))
    out = [named, non_finite, st.just(Mutation(f"no {key}", _drop(key, "arrays")))]
    if values:
        scaled = st.tuples(st.sampled_from([1e6, -1e6, 1e12]), st.integers(0, 10**6)).map(
            lambda v: Mutation(f"{key} row {v[1]} x {v[0]:g}", _edit(key, _row_scaled(*v)))
        )
        whole = st.sampled_from([1e4, 1e-9, 0.0]).map(
            lambda f: Mutation(f"{key} x {f:g}", _edit(key, lambda a: a * np.float32(f)))
        )
        out += [scaled, whole]
    return st.one_of(*out)


def _shared_aligned_lies() -> st.SearchStrategy[Mutation]:
    """Aligned shared targets that are not T_k S_k (check 3), by a relative gap above its 1e-3."""

    def nudge(delta: float, index: int) -> Callable[[np.ndarray], np.ndarray]:
        def fn(a: np.ndarray) -> np.ndarray:
            out = a.copy()
            out.flat[index % out.size] += delta * float(np.linalg.norm(a))
            return out

        return fn

    return st.one_of(
        st.tuples(st.floats(0.01, 1.0), st.integers(0, 10**6)).map(
            lambda v: Mutation(
                f"shared-aligned[{v[1]}] nudged by {v[0]:g} of its norm", _edit(P.SHARED_ALIGNED, nudge(*v))
            )
        ),
        st.sampled_from([0.9, 1.1, -1.0]).map(
            lambda f: Mutation(
                f"shared-aligned x {f:g}", _edit(P.SHARED_ALIGNED, lambda a: a * np.float32(f))
            )
        ),
        st.just(Mutation("shared-aligned rows reversed", _edit(P.SHARED_ALIGNED, lambda a: a[::-1].copy()))),
    )


def _ids_lies() -> st.SearchStrategy[Mutation]:
    """Ids that are not exactly the assigned ones, or not 1-D integers."""

    def replace(value: Callable[[np.ndarray], int], index: int) -> Change:
        def change(node: dict, arrays: dict) -> None:
            ids = np.array(arrays[P.IDS])
            ids[index % len(ids)] = value(ids)
            arrays[P.IDS] = ids

        return change

    def foreign(ids: np.ndarray) -> int:  # an id of D outside this participant's request
        return int(np.setdiff1d(np.arange(NUM_SAMPLES), ids)[0])

    def one_more(node: dict, arrays: dict) -> None:
        arrays[P.IDS] = np.append(arrays[P.IDS], foreign(arrays[P.IDS]))
        arrays[P.TARGETS] = np.concatenate([arrays[P.TARGETS], arrays[P.TARGETS][:1]])

    def duplicate(node: dict, arrays: dict) -> None:  # the first id twice, as many rows
        ids = arrays[P.IDS]
        arrays[P.IDS] = np.append(ids[:-1], ids[0]) if len(ids) > 1 else np.repeat(ids, 2)
        if len(ids) == 1:
            arrays[P.TARGETS] = np.repeat(arrays[P.TARGETS], 2, axis=0)

    def one_less(node: dict, arrays: dict) -> None:
        arrays[P.IDS], arrays[P.TARGETS] = arrays[P.IDS][:-1], arrays[P.TARGETS][:-1]

    values: dict[str, Callable[[np.ndarray], int]] = {
        "-1": lambda ids: -1,
        "int64 min": lambda ids: INT64[0],
        "|D|": lambda ids: NUM_SAMPLES,
        "int64 max": lambda ids: INT64[1],
        "a foreign id": foreign,
    }
    dtypes = {
        "float64": lambda a: a.astype(np.float64),
        "float32": lambda a: a.astype(np.float32),
        "bool": lambda a: a % 2 == 0,
        "str": lambda a: a.astype("U8"),
        "uint64 wrapped": lambda a: a.astype(np.uint64) + np.uint64(2**63),
    }
    return st.one_of(
        st.tuples(st.sampled_from(sorted(values)), st.integers(1, 10**6)).map(
            lambda v: Mutation(f"ids[{v[1]}] = {v[0]}", replace(values[v[0]], v[1]))
        ),
        st.sampled_from(sorted(dtypes)).map(lambda n: Mutation(f"ids as {n}", _edit(P.IDS, dtypes[n]))),
        st.sampled_from(sorted(RAW)).map(lambda n: Mutation(f"ids as {n}", _edit(P.IDS, RAW[n]))),
        st.just(Mutation("ids 2-D", _edit(P.IDS, lambda a: a[:, None]))),
        st.just(Mutation("ids one more (a foreign id and its row)", one_more)),
        st.just(Mutation("ids one less (and its row)", one_less)),
        st.just(Mutation("ids with a duplicate", duplicate)),
        st.just(Mutation("ids shifted by |D|", _edit(P.IDS, lambda a: a + NUM_SAMPLES))),
        st.just(Mutation("no ids", _drop(P.IDS, "arrays"))),
    )


def _records() -> st.SearchStrategy[Mutation]:
    """The reply's records missing, swapped or of the other record type."""
    table: dict[str, Callable[[dict, dict], RecordDict]] = {
        "no node record": lambda n, a: RecordDict(
            {P.ARRAYS: ArrayRecord({k: Array(v) for k, v in a.items()})}
        ),
        "no arrays record": lambda n, a: RecordDict({P.NODE: ConfigRecord(n)}),
        "empty content": lambda n, a: RecordDict(),
        "records swapped": lambda n, a: RecordDict(
            {P.NODE: ArrayRecord({k: Array(v) for k, v in a.items()}), P.ARRAYS: ConfigRecord(n)}
        ),
        "arrays as a ConfigRecord of floats": lambda n, a: RecordDict(
            {P.NODE: ConfigRecord(n), P.ARRAYS: ConfigRecord({k: 1.5 for k in a})}
        ),
        "arrays as a ConfigRecord of lists": lambda n, a: RecordDict(
            {
                P.NODE: ConfigRecord(n),
                P.ARRAYS: ConfigRecord({k: v.ravel()[:4].tolist() for k, v in a.items()}),
            }
        ),
        "node as an ArrayRecord": lambda n, a: RecordDict(
            {
                P.NODE: ArrayRecord({k: Array(np.asarray([1], np.int64)) for k in n}),
                P.ARRAYS: ArrayRecord({k: Array(v) for k, v in a.items()}),
            }
        ),
    }
    return st.sampled_from(sorted(table)).map(lambda n: Mutation(n, _content(table[n])))


def _shared_target_lies() -> st.SearchStrategy[Mutation]:
    """Shared targets that are not the participant's own (with, or without, the uniformity
    claim made to match them). Not drawn: the whole array rescaled, which the threat model
    allows (any transformation of a prior's own outputs) and every check is invariant to."""

    def row(factor: float, index: int) -> Callable[[np.ndarray], np.ndarray]:
        return _row_scaled(factor, index)

    def noise(a: np.ndarray) -> np.ndarray:
        return (np.random.default_rng(0).normal(size=a.shape) * a.std()).astype(np.float32)

    table: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "all zero": np.zeros_like,
        "one constant row everywhere": lambda a: np.repeat(a[:1], len(a), axis=0),
        "rows reversed": lambda a: a[::-1].copy(),
        "rows rolled by one": lambda a: np.roll(a, 1, axis=0),
        "noise of the same scale": noise,
        "row 3 x 1e6": row(1e6, 3),
        "row 3 x 0": row(0.0, 3),
    }

    def lie(name: str, claim: bool) -> Change:
        def change(node: dict, arrays: dict) -> None:
            targets = table[name](np.array(arrays[P.SHARED_TARGETS])).astype(np.float32)
            arrays[P.SHARED_TARGETS] = targets
            if claim:  # so that only the later checks can catch it
                node[P.REPORTED_TARGET_UNIFORMITY] = uniformity(targets)

        return change

    return st.tuples(st.sampled_from(sorted(table)), st.booleans()).map(
        lambda v: Mutation(f"shared-targets {v[0]}" + (", claimed" if v[1] else ""), lie(*v))
    )


def _evenly(*families: st.SearchStrategy[Mutation]) -> st.SearchStrategy[Mutation]:
    """One family drawn first, each as likely (``one_of`` would weigh them by their branches,
    and the node fields have the most)."""
    return st.sampled_from(range(len(families))).flatmap(lambda i: families[i])


def uniformity_mutations(hostile: int) -> st.SearchStrategy[Mutation]:
    """Hostile uniformity replies."""
    return _evenly(
        uniformity_fields(hostile),
        target_arrays(P.SHARED_TARGETS, values=False),
        _shared_target_lies(),
        _records(),
    )


def align_mutations(part: int) -> st.SearchStrategy[Mutation]:
    """Hostile align replies (``part``: the most ids one align request holds)."""
    return _evenly(
        align_fields(part),
        _ids_lies(),
        target_arrays(P.TARGETS, values=True),
        target_arrays(P.SHARED_ALIGNED, values=False),
        _shared_aligned_lies(),
        _records(),
    )


# ------------------------------------------------------------------ the fuzz
@FUZZ
@given(data=st.data(), knob=knobs)
def test_hostile_uniformity_replies_are_rejected_and_never_merged(data: st.DataObject, knob: Knobs) -> None:
    mutation = data.draw(uniformity_mutations(knob.hostile), label="mutation")
    note(f"partition {knob.hostile}'s uniformity reply: {mutation}")
    _check_round(_run(knob, P.MSG_UNIFORMITY, mutation.change))


@FUZZ
@given(data=st.data(), knob=knobs)
def test_hostile_align_replies_are_rejected_and_never_merged(data: st.DataObject, knob: Knobs) -> None:
    part = min(knob.upload_max_samples, NUM_SAMPLES)
    mutation = data.draw(align_mutations(part), label="mutation")
    note(f"partition {knob.hostile}'s align replies: {mutation}")
    _check_round(_run(knob, P.MSG_ALIGN, mutation.change))


def _permute_rows(node: dict, arrays: dict) -> None:
    order = np.random.default_rng(len(arrays[P.IDS])).permutation(len(arrays[P.IDS]))
    arrays[P.IDS], arrays[P.TARGETS] = arrays[P.IDS][order], arrays[P.TARGETS][order]


def _without_optional_fields(node: dict, arrays: dict) -> None:
    for key in (P.STAGE, P.NUM_STAGES, P.NAME):  # a node without evolution support, unnamed
        del node[key]


def _extra_keys(node: dict, arrays: dict) -> None:
    node["comment"] = "unknown keys are ignored"
    arrays[P.SHARED_IDS] = np.arange(10**4, dtype=np.int64) * -1  # not the platform's to trust


HONEST_REENCODINGS: dict[str, tuple[str, Change]] = {
    "shared targets as float64": (P.MSG_UNIFORMITY, _edit(P.SHARED_TARGETS, lambda a: a.astype(np.float64))),
    "shared targets big-endian": (P.MSG_UNIFORMITY, _edit(P.SHARED_TARGETS, lambda a: a.astype(">f4"))),
    "shared targets in Fortran order": (
        P.MSG_UNIFORMITY,
        _edit(P.SHARED_TARGETS, lambda a: Array(np.asfortranarray(a))),  # an Array: sent as is
    ),
    "uniformity reply without stage, num-stages and name": (P.MSG_UNIFORMITY, _without_optional_fields),
    "uniformity reply with unknown keys": (P.MSG_UNIFORMITY, _extra_keys),
    "targets as float64": (P.MSG_ALIGN, _edit(P.TARGETS, lambda a: a.astype(np.float64))),
    "targets big-endian": (P.MSG_ALIGN, _edit(P.TARGETS, lambda a: a.astype(">f4"))),
    "ids as int32": (P.MSG_ALIGN, _edit(P.IDS, lambda a: a.astype(np.int32))),
    "ids as uint16": (P.MSG_ALIGN, _edit(P.IDS, lambda a: a.astype(np.uint16))),
    "ids and their rows in another order": (P.MSG_ALIGN, _permute_rows),
    "align reply without stage": (P.MSG_ALIGN, _drop(P.STAGE, "node")),
    "align reply with an int embed-seconds": (P.MSG_ALIGN, _set(P.EMBED_SECONDS, 0)),
    "align reply with unknown keys": (P.MSG_ALIGN, _extra_keys),
}


@pytest.mark.parametrize("name", sorted(HONEST_REENCODINGS))
def test_an_honest_reply_re_encoded_losslessly_is_accepted(name: str) -> None:
    # The other side of the property: the checks refuse what is wrong, not what is merely
    # spelled otherwise (and the rewriting itself, over the wire, keeps a reply honest).
    kind, change = HONEST_REENCODINGS[name]
    for hostile in (0, 2):  # partition 2 (the one-hot human prior) is the anchor
        out = _run(Knobs(hostile, 1, 1, 64), kind, change)
        _check_round(out, accepted=True)
        assert out.result.rounds[0].anchor_partition == 2


# ------------------------------------------------------------------ what the fuzz found
def _arrays_as_config_record(node: dict, arrays: dict) -> RecordDict:
    return RecordDict({P.NODE: ConfigRecord(node), P.ARRAYS: ConfigRecord({k: 1.5 for k in arrays})})


FOUND: dict[str, tuple[str, Change, Knobs, str]] = {
    # np.load allocated what the header claims: MemoryError, the platform crashed
    "a lying npy header in the shared targets": (
        P.MSG_UNIFORMITY,
        _edit(P.SHARED_TARGETS, RAW["a header claiming 10^12 x 10^6 floats"]),
        Knobs(1, 1, 1, 4096),
        "uniformity: shared-targets: array data holds 0 bytes",
    ),
    "a lying npy header in the ids": (
        P.MSG_ALIGN,
        _edit(P.IDS, RAW["a header claiming 2^40 floats, 8 bytes sent"]),
        Knobs(1, 1, 1, 4096),
        "align: ids: array data holds 8 bytes",
    ),
    # int(inf) raised OverflowError, which no handler expected: the platform crashed
    "num-partitions = inf": (
        P.MSG_UNIFORMITY,
        _set(P.NUM_PARTITIONS, float("inf")),
        Knobs(3, 1, 1, 4096),
        "uniformity: num-partitions is float inf, not an int",
    ),
    "cached = inf in an align reply": (
        P.MSG_ALIGN,
        _set(P.CACHED, float("inf")),
        Knobs(0, 1, 2, 64),
        "align: cached is float inf, not an int",
    ),
    # a ConfigRecord where the arrays belong: AttributeError on .numpy(), the platform crashed
    "arrays as a ConfigRecord": (
        P.MSG_ALIGN,
        _content(_arrays_as_config_record),
        Knobs(2, 1, 1, 4096),
        "align: record 'arrays' is a ConfigRecord, expected an ArrayRecord",
    ),
    # read after the merge: the node was rejected with its rows left merged (and counted),
    # and max-reassign 0 kept them in D' as if they were honest
    "no embed-seconds in an align reply": (
        P.MSG_ALIGN,
        _drop(P.EMBED_SECONDS, "node"),
        Knobs(1, 0, 1, 4096),
        "align: no 'embed-seconds'",
    ),
    "no embed-seconds in an align reply, redundancy 2": (
        P.MSG_ALIGN,
        _drop(P.EMBED_SECONDS, "node"),
        Knobs(1, 0, 2, 64),
        "align: no 'embed-seconds'",
    ),
    # coerced by int() / float(): accepted (and NaN written to summary.json)
    "partition-id = 1.0": (P.MSG_UNIFORMITY, _set(P.PARTITION_ID, 1.0), Knobs(1, 1, 1, 4096), "not an int"),
    "stage = False in an align reply": (
        P.MSG_ALIGN,
        _set(P.STAGE, False),
        Knobs(1, 1, 1, 4096),
        "not an int",
    ),
    "reported-uniformity = nan": (
        P.MSG_UNIFORMITY,
        _set(P.REPORTED_UNIFORMITY, float("nan")),
        Knobs(1, 1, 1, 4096),
        "uniformity: reported-uniformity nan is not finite",
    ),
    "cached = -1": (P.MSG_UNIFORMITY, _set(P.CACHED, -1), Knobs(1, 1, 1, 4096), "cached -1 outside [0, 60]"),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_the_fuzz_found_stays_rejected(name: str) -> None:
    kind, change, knob, reason = FOUND[name]
    out = _run(knob, kind, change)
    _check_round(out)
    bad = next(n for n in out.result.rounds[0].nodes if n.node_id == out.hostile_node)
    assert reason in bad.reason
