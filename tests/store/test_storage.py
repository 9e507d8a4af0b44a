import json

import numpy as np
import pytest

from coopt_flwr.store.storage import load_optimized, write_json, write_tensors


def test_roundtrip_and_no_temp_files_left(tmp_path):
    tensors = {"ids": np.arange(4, dtype=np.int64), "targets": np.ones((4, 3), np.float32)}
    write_tensors(tmp_path / "optimized.safetensors", tensors)
    write_json(tmp_path / "summary.json", {"a": np.float32(1.5), "b": np.arange(2), "c": tmp_path})
    out = load_optimized(tmp_path)
    np.testing.assert_array_equal(out["ids"], tensors["ids"])
    assert json.loads((tmp_path / "summary.json").read_text())["b"] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimized.safetensors", "summary.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_corrupt_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_optimized(tmp_path / "none.safetensors")
    bad = tmp_path / "optimized.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_optimized(bad)


def test_streamed_safetensors_are_read_by_the_official_loader(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    arrays = {
        "targets": np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "mask": np.array([True, False, True]),
        "f64-view": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
    }
    write_tensors(tmp_path / "x.safetensors", arrays, metadata={"target-dim": "5"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    with safe_open(str(tmp_path / "x.safetensors"), "np") as fh:
        assert fh.metadata() == {"target-dim": "5"}
    with pytest.raises(TypeError, match="unsupported dtype"):
        write_tensors(tmp_path / "y.safetensors", {"c": np.zeros(2, np.complex64)})
    assert not list(tmp_path.glob(".y.safetensors.*"))  # no temp file left behind
