"""The generic training loop: budgets, schedule, determinism, evaluation clock, checkpoints, augmentation."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coopt_flwr.learn import training
from coopt_flwr.learn.training import (
    TrainConfig,
    augment_crop_flip,
    fit,
    load_checkpoint,
    lr_factor,
    to_float_nchw,
)

N, H, W = 96, 4, 4


def _problem(seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    # Targets are a fixed linear function of the pixels: exactly learnable by a linear model.
    proj = rng.standard_normal((H * W * 3, 5)).astype(np.float32)
    targets = torch.from_numpy(images.reshape(N, -1).astype(np.float32) / 255.0 @ proj)
    return images, targets


def _regression(
    cfg: TrainConfig, images: np.ndarray, targets: torch.Tensor, **kwargs
) -> tuple[nn.Module, training.TrainResult]:
    torch.manual_seed(123)  # same init in every run; fit's seed only governs training
    model = nn.Linear(H * W * 3, targets.shape[1])

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        pred = model(to_float_nchw(x).flatten(1))
        return nn.functional.mse_loss(pred, targets[idx])

    return model, fit(step, [model], images, cfg, **kwargs)


def _cfg(**kwargs) -> TrainConfig:
    base = {"batch_size": 16, "lr": 0.05, "device": "cpu", "progress": False}
    return TrainConfig(**{**base, **kwargs})


def test_loss_decreases_on_a_tiny_regression_problem() -> None:
    images, targets = _problem()
    _, result = _regression(_cfg(epochs=15), images, targets)
    assert len(result.losses) == 15
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert result.steps == 15 * (N // 16)
    assert result.epochs == pytest.approx(15.0)
    assert result.curve == [] and result.final_acc is None


def test_same_seed_is_identical_and_another_seed_differs() -> None:
    images, targets = _problem()
    m1, r1 = _regression(_cfg(epochs=3, seed=7), images, targets)
    m2, r2 = _regression(_cfg(epochs=3, seed=7), images, targets)
    m3, r3 = _regression(_cfg(epochs=3, seed=8), images, targets)
    assert r1.losses == r2.losses
    assert torch.equal(m1.weight, m2.weight) and torch.equal(m1.bias, m2.bias)
    assert r1.losses != r3.losses
    assert not torch.equal(m1.weight, m3.weight)


def test_step_receives_the_batch_rows_and_their_indices() -> None:
    images, _ = _problem()
    data = torch.from_numpy(images)
    model = nn.Linear(1, 1)
    seen: list[torch.Tensor] = []
    progresses: list[float] = []

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape == (16, H, W, 3)
        assert idx.dtype == torch.int64 and idx.shape == (16,)
        assert torch.equal(x, data[idx])
        seen.append(idx.clone())
        progresses.append(progress)
        return model(torch.ones(1, 1)).square().sum()

    result = fit(step, [model], images, _cfg(epochs=2))
    assert result.steps == 2 * (N // 16)
    # Each epoch is a permutation: every row exactly once (N is a multiple of the batch size).
    first_epoch = torch.cat(seen[: N // 16])
    assert sorted(first_epoch.tolist()) == list(range(N))
    assert not torch.equal(first_epoch, torch.cat(seen[N // 16 :]))
    assert all(0.0 <= p <= 1.0 for p in progresses)
    assert progresses == sorted(progresses)


def test_float_epochs_and_partial_batches() -> None:
    images, targets = _problem()
    _, result = _regression(_cfg(epochs=2.5, batch_size=10), images, targets)
    # 96 // 10 = 9 full batches per epoch (the rest reshuffled into later epochs); 2.5 * 9 -> 23 steps.
    assert result.steps == math.ceil(2.5 * 9)
    assert result.epochs == pytest.approx(23 / 9)
    assert len(result.losses) == 3  # two full epochs and a partial one


def test_data_smaller_than_a_batch_is_used_whole() -> None:
    images, targets = _problem()
    _, result = _regression(_cfg(epochs=3, batch_size=1000), images[:10], targets[:10])
    assert result.steps == 3


def test_after_step_gets_increasing_progress_ending_at_one() -> None:
    images, targets = _problem()
    reached: list[float] = []
    _, result = _regression(_cfg(epochs=2), images, targets, after_step=reached.append)
    assert len(reached) == result.steps
    assert reached == sorted(reached)
    assert reached[-1] == pytest.approx(1.0)


def test_time_budget_is_respected() -> None:
    images, _ = _problem()
    model = nn.Linear(1, 1)

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        time.sleep(0.01)
        return model(torch.ones(1, 1)).square().sum()

    t0 = time.perf_counter()
    result = fit(step, [model], images, _cfg(time_budget_s=1.0))
    wall = time.perf_counter() - t0
    assert 1.0 <= result.train_seconds < 1.5
    assert wall < 3.0
    assert result.steps > 10
    assert result.epochs == pytest.approx(result.steps / (N // 16))


def test_epochs_end_a_run_before_a_long_time_budget() -> None:
    images, targets = _problem()
    _, result = _regression(_cfg(epochs=1, time_budget_s=60.0), images, targets)
    assert result.steps == N // 16 and result.train_seconds < 30


def test_curve_starts_at_zero_ends_at_the_end_and_excludes_eval_time() -> None:
    images, _ = _problem()
    model = nn.Linear(1, 1)
    calls: list[bool] = []

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        time.sleep(0.005)
        return model(torch.ones(1, 1)).square().sum()

    def evaluate() -> float:
        calls.append(model.training)
        model.eval()  # fit must put it back in train mode
        time.sleep(0.25)
        return len(calls) / 100

    t0 = time.perf_counter()
    result = fit(step, [model], images, _cfg(time_budget_s=0.6, eval_every_s=0.2), evaluate=evaluate)
    wall = time.perf_counter() - t0
    assert result.curve[0] == (0.0, 0.01)
    assert result.curve[-1] == (result.train_seconds, result.final_acc)
    assert len(result.curve) >= 3  # t=0, at least one periodic evaluation, the end
    times = [t for t, _ in result.curve]
    assert times == sorted(times)
    # The clock was paused: the evaluations' sleeps are not training time.
    assert 0.6 <= result.train_seconds < 0.9
    assert wall >= result.train_seconds + 0.25 * len(result.curve) - 0.05
    assert model.training


def test_explicit_evaluation_schedule() -> None:
    images, _ = _problem()
    model = nn.Linear(1, 1)

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        time.sleep(0.01)
        return model(torch.ones(1, 1)).square().sum()

    result = fit(
        step, [model], images, _cfg(time_budget_s=0.5, eval_at_s=(0.1, 0.3, 5.0)), evaluate=lambda: 0.5
    )
    times = [t for t, _ in result.curve]
    # t=0, the first step past 0.1 s and past 0.3 s, the end; 5.0 s lies beyond the budget
    assert len(times) == 4 and times[0] == 0.0
    assert 0.1 <= times[1] < 0.2 and 0.3 <= times[2] < 0.4 and times[3] == result.train_seconds
    with pytest.raises(ValueError, match="eval_at_s"):
        _cfg(time_budget_s=1.0, eval_at_s=(0.0,))


def test_checkpoints_are_written_per_epoch_and_loadable(tmp_path: Path) -> None:
    images, targets = _problem()
    ckpt = tmp_path / "ckpt"
    model, result = _regression(_cfg(epochs=2, checkpoint_dir=str(ckpt)), images, targets)
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["epoch_0001.pt", "epoch_0002.pt", "last.pt"]  # no temp files left
    fresh = nn.Linear(H * W * 3, targets.shape[1])
    meta = load_checkpoint(ckpt / "last.pt", [fresh])
    assert meta["step"] == result.steps and meta["epoch"] == pytest.approx(2.0)
    assert torch.equal(fresh.weight, model.weight)
    first = load_checkpoint(ckpt / "epoch_0001.pt", [fresh])
    assert first["step"] == N // 16
    assert not torch.equal(fresh.weight, model.weight)
    with pytest.raises(ValueError, match="modules"):
        load_checkpoint(ckpt / "last.pt", [fresh, nn.Linear(1, 1)])


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def broken_save(obj: object, path: str) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        training._save_checkpoint(target, [nn.Linear(1, 1)], epoch=1.0, step=1, train_seconds=0.1)
    assert target.read_bytes() == b"previous"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and the temp file is gone


def test_non_finite_loss_raises() -> None:
    images, _ = _problem()
    model = nn.Linear(1, 1)

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        return model(torch.ones(1, 1)).sum() * float("nan")

    with pytest.raises(FloatingPointError):
        fit(step, [model], images, _cfg(epochs=1))


def test_cpu_bf16_autocast_trains() -> None:
    images, targets = _problem()
    dtypes: list[torch.dtype] = []
    torch.manual_seed(0)
    model = nn.Linear(H * W * 3, targets.shape[1])

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        pred = model(to_float_nchw(x).flatten(1))
        dtypes.append(pred.dtype)
        return nn.functional.mse_loss(pred.float(), targets[idx])

    result = fit(step, [model], images, _cfg(epochs=10, cpu_amp=True))
    assert set(dtypes) == {torch.bfloat16}
    assert model.weight.dtype == torch.float32  # master weights stay float32
    assert result.losses[-1] < 0.3 * result.losses[0]


def test_read_only_memmap_like_input_is_accepted() -> None:
    images, targets = _problem()
    images.setflags(write=False)
    _, result = _regression(_cfg(epochs=1, optimizer="adamw", lr=1e-2), images, targets)
    assert result.steps == N // 16


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"epochs": 0},
        {"time_budget_s": -1.0},
        {"epochs": 1, "optimizer": "lamb"},
        {"epochs": 1, "batch_size": 0},
        {"epochs": 1, "warmup_frac": 1.0},
    ],
)
def test_invalid_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_lr_factor_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0.0, 0.1) == 0.0
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(2.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    decay = [lr_factor(p, 0.1) for p in np.linspace(0.1, 1.0, 50)]
    assert decay == sorted(decay, reverse=True)
    assert lr_factor(0.0, 0.0) == 1.0


def test_to_float_nchw() -> None:
    x = torch.arange(2 * 3 * 4 * 3, dtype=torch.uint8).reshape(2, 3, 4, 3)
    y = to_float_nchw(x)
    assert y.shape == (2, 3, 3, 4) and y.dtype == torch.float32
    assert torch.equal(y[1, 2, 0, 3], x[1, 0, 3, 2].float() / 255)
    with pytest.raises(ValueError):
        to_float_nchw(x.float())


def test_augment_shapes_range_and_determinism() -> None:
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8))
    a = augment_crop_flip(x, pad=2, generator=torch.Generator().manual_seed(1))
    b = augment_crop_flip(x, pad=2, generator=torch.Generator().manual_seed(1))
    c = augment_crop_flip(x, pad=2, generator=torch.Generator().manual_seed(2))
    assert a.shape == (32, 3, 8, 8) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_outputs_are_padded_crops_possibly_mirrored() -> None:
    pad = 2
    x = torch.from_numpy(np.random.default_rng(1).integers(1, 256, (16, 6, 6, 3), dtype=np.uint8))
    out = augment_crop_flip(x, pad=pad, generator=torch.Generator().manual_seed(0))
    padded = to_float_nchw(torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad)))
    flipped_any = False
    for i in range(x.shape[0]):
        candidates = []
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                crop = padded[i, :, oy : oy + 6, ox : ox + 6]
                candidates += [(crop, False), (crop.flip(-1), True)]
        matches = [flipped for crop, flipped in candidates if torch.equal(crop, out[i])]
        assert matches, f"sample {i} is not a crop of its padded image"
        flipped_any |= all(matches)
    assert flipped_any
    # pad=0: only flips, so each output is the image or its mirror.
    plain = to_float_nchw(x)
    out0 = augment_crop_flip(x, pad=0, generator=torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):
        assert torch.equal(out0[i], plain[i]) or torch.equal(out0[i], plain[i].flip(-1))
