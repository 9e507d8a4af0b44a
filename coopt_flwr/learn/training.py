"""One generic training loop, shared by CoOpt students and the SSL baselines.

:func:`fit` owns everything that is common to "train some modules on a uint8 image array":
seeded per-epoch shuffling, the optimizer, linear warm-up + cosine learning-rate schedule, an
epoch or wall-time budget, periodic evaluation on a training-time clock that is paused while
evaluating, automatic mixed precision on CUDA, atomic per-epoch checkpoints and a progress bar.
What a step computes is the caller's business: the step function receives a batch of raw uint8
images already on the device, their indices into the image array (to look up per-sample targets)
and the training progress, and returns a scalar loss.

The step contract is exactly::

    step(images_uint8_nhwc_on_device, idx_int64_on_device, progress) -> loss

``images`` has shape (B, H, W, 3) and dtype uint8, ``idx`` shape (B,) and dtype int64 (rows of the
array given to :func:`fit`), ``progress`` is a float in [0, 1], the loss a scalar tensor.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coopt_flwr.devices import resolve_device, tune_cpu_allocator
from coopt_flwr.store.storage import atomic_write

__all__ = [
    "OPTIMIZERS",
    "AfterStepFn",
    "EvaluateFn",
    "StepFn",
    "TrainConfig",
    "TrainResult",
    "augment_crop_flip",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "to_float_nchw",
]

OPTIMIZERS = ("sgd", "adamw")

StepFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""``step(images, idx, progress) -> loss``: uint8 (B, H, W, 3) and int64 (B,) on the device."""
EvaluateFn = Callable[[], float]
"""Returns an accuracy in [0, 1]; called with the training clock paused."""
AfterStepFn = Callable[[float], None]
"""Called after every optimizer step with the progress reached, e.g. for momentum encoders."""

CHECKPOINT_EPOCH = "epoch_{:04d}.pt"
CHECKPOINT_LAST = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes
    ----------
    epochs : float or None
        Stop after this many (possibly fractional) passes over the data.
    time_budget_s : float or None
        Stop after this much training wall time (evaluation and checkpointing excluded). At least
        one of ``epochs`` and ``time_budget_s`` must be set; with both, whichever ends first.
    batch_size : int
        Images per step. The learning rate is *not* rescaled with it.
    optimizer : str
        ``"sgd"`` (momentum 0.9, Nesterov) or ``"adamw"``.
    lr : float
        Peak learning rate, reached at the end of the warm-up.
    weight_decay : float
        Decoupled (AdamW) or L2 (SGD) weight decay; biases and normalization parameters are exempt.
    warmup_frac : float
        Fraction of the schedule spent in the linear warm-up; cosine decay to 0 follows.
    seed : int
        Seeds the shuffling and the global torch RNG during training (the caller's RNG state is
        restored afterwards).
    device : str or None
        None picks CUDA when available, else CPU.
    amp : bool
        Autocast to bf16 (fp16 with loss scaling where bf16 is unsupported) on CUDA; ignored on CPU.
    cpu_amp : bool
        Opt-in bf16 autocast on the CPU. On CPUs with AVX512-BF16/AMX it trains a CIFAR ResNet-10
        ~1.75x faster (measured on a 2-core AMD EPYC); on others it can be slower.
    eval_every_s : float or None
        Call ``evaluate`` every this many *training* seconds (besides before and after training).
    eval_at_s : tuple of float or None
        Call ``evaluate`` when training time first reaches each of these seconds (an explicit
        schedule, e.g. dense early where time-to-accuracy is decided); combines with
        ``eval_every_s``.
    checkpoint_dir : str or None
        Write ``epoch_NNNN.pt`` after every completed epoch and ``last.pt`` at the end.
    progress : bool
        Show a tqdm progress bar on stderr.
    """

    epochs: float | None = None
    time_budget_s: float | None = None
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_frac: float = 0.05
    seed: int = 0
    device: str | None = None
    amp: bool = True
    cpu_amp: bool = False
    eval_every_s: float | None = None
    eval_at_s: tuple[float, ...] | None = None
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs is None and self.time_budget_s is None:
            raise ValueError("TrainConfig needs epochs or time_budget_s (or both)")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.eval_every_s is not None and not self.eval_every_s > 0:
            raise ValueError(f"eval_every_s must be > 0, got {self.eval_every_s}")
        if self.eval_at_s is not None and not all(t > 0 for t in self.eval_at_s):
            raise ValueError(f"eval_at_s must hold positive seconds, got {self.eval_at_s}")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    curve : list of (float, float)
        (training seconds, accuracy) of every ``evaluate`` call, including t=0 (before the first
        step) and the end; empty without ``evaluate``.
    train_seconds : float
        Training wall time, evaluation and checkpointing excluded.
    epochs : float
        Passes over the data completed (fractional).
    steps : int
        Optimizer steps taken.
    final_acc : float or None
        The last accuracy of ``curve``, None without ``evaluate``.
    losses : list of float
        Mean loss of every epoch (the last one possibly partial).
    """

    curve: list[tuple[float, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs: float = 0.0
    steps: int = 0
    final_acc: float | None = None
    losses: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- tensors / augmentation


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1].

    Parameters
    ----------
    images : torch.Tensor
        uint8 tensor of shape (B, H, W, 3).

    Returns
    -------
    torch.Tensor
        float32 tensor of shape (B, 3, H, W) on the same device. Its memory layout is
        channels-last (a permuted view made dense), which convolutions on CUDA prefer.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 (B, H, W, C) tensor, got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def augment_crop_flip(
    images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, for a whole batch at once.

    Parameters
    ----------
    images : torch.Tensor
        uint8 tensor of shape (B, H, W, 3).
    pad : int
        Zero padding on every side before cropping back to (H, W); 0 disables the crop.
    generator : torch.Generator or None
        Source of randomness, on the device of ``images``; None uses the global RNG.

    Returns
    -------
    torch.Tensor
        float32 tensor of shape (B, 3, H, W) in [0, 1].
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 (B, H, W, C) tensor, got {images.dtype} {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, h, w, _ = images.shape
    dev = images.device
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    # One gather in uint8 (4x less memory traffic than float) does crop and flip together:
    # output pixel (i, j) of sample n reads padded pixel (oy_n + i, ox_n + j'), j' mirrored if flipped.
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[0, :, None] + ar_h  # (B, H)
    cols = offsets[1, :, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    padded = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad)) if pad else images
    bidx = torch.arange(b, device=dev)[:, None, None]
    crops = padded[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return to_float_nchw(crops)


# --------------------------------------------------------------------------- schedule / optimizer


def lr_factor(progress: float, warmup_frac: float) -> float:
    """Learning-rate multiplier: linear warm-up from 0 to 1, then cosine decay to 0.

    Parameters
    ----------
    progress : float
        Fraction of the schedule elapsed, clipped to [0, 1].
    warmup_frac : float
        Fraction of the schedule used for the warm-up.

    Returns
    -------
    float
        Multiplier in [0, 1].
    """
    p = min(max(progress, 0.0), 1.0)
    if p < warmup_frac:
        return p / warmup_frac
    return 0.5 * (1.0 + math.cos(math.pi * (p - warmup_frac) / (1.0 - warmup_frac)))


def _make_optimizer(modules: Sequence[nn.Module], cfg: TrainConfig) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            # Biases and norm scales/shifts are 1-D: decaying them only hurts (standard practice).
            (no_decay if p.ndim <= 1 else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("fit: the modules have no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# --------------------------------------------------------------------------- clock / checkpoints


class _TrainClock:
    """Wall clock that only runs while training (paused for evaluation and checkpointing)."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._accumulated = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            # Queued CUDA work belongs to training: wait for it before stopping the clock.
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self._accumulated += time.perf_counter() - self._started
            self._started = None

    def elapsed(self) -> float:
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self._accumulated + running

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self._started is not None
        self.pause()
        try:
            yield
        finally:
            if was_running:
                self.start()


def _save_checkpoint(
    path: Path, modules: Sequence[nn.Module], *, epoch: float, step: int, train_seconds: float
) -> None:
    # Tensors go to the CPU so that a checkpoint written on a GPU loads anywhere.
    states = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in modules]
    payload = {"modules": states, "epoch": epoch, "step": step, "train_seconds": train_seconds}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, modules: Sequence[nn.Module]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` into ``modules`` (same order as when training).

    Parameters
    ----------
    path : str or Path
        An ``epoch_NNNN.pt`` or ``last.pt`` file.
    modules : sequence of nn.Module
        The modules that were trained, in the order given to :func:`fit`.

    Returns
    -------
    dict
        The checkpoint's metadata: ``epoch`` (float), ``step`` (int), ``train_seconds`` (float).

    Raises
    ------
    ValueError
        If the number of modules differs from the checkpoint's.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    states = payload["modules"]
    if len(states) != len(modules):
        raise ValueError(f"checkpoint {path} holds {len(states)} modules, {len(modules)} given")
    for module, state in zip(modules, states, strict=True):
        module.load_state_dict(state)
    return {k: payload[k] for k in ("epoch", "step", "train_seconds")}


# --------------------------------------------------------------------------- fit


def _autocast(device: torch.device, cfg: TrainConfig) -> tuple[contextlib.AbstractContextManager, bool]:
    """Autocast context for a step and whether fp16 loss scaling is needed."""
    if device.type == "cpu" and cfg.cpu_amp:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16), False
    if not cfg.amp or device.type != "cuda":
        return contextlib.nullcontext(), False
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype), dtype == torch.float16


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _images_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("fit: images must be a uint8 numpy array of shape (N, H, W, 3)")
    if images.shape[0] < 1:
        raise ValueError("fit: images is empty")
    # A writable C-contiguous copy (inputs may be read-only memory maps); shared when already so.
    array = np.require(images, requirements=["C", "W"])
    return torch.from_numpy(array).to(device)


def fit(
    step: StepFn,
    modules: Sequence[nn.Module],
    images: np.ndarray,
    cfg: TrainConfig,
    evaluate: EvaluateFn | None = None,
    after_step: AfterStepFn | None = None,
) -> TrainResult:
    """Train ``modules`` by minimizing the loss returned by ``step``.

    Every epoch visits a fresh seeded permutation of the images in batches of
    ``cfg.batch_size``; the last incomplete batch is dropped (it is part of the next epoch's
    permutation), except that a data set smaller than one batch is used whole.

    Parameters
    ----------
    step : StepFn
        ``step(images, idx, progress) -> loss``: ``images`` uint8 (B, H, W, 3) and ``idx`` int64 (B,)
        (rows of ``images``), both on the training device; ``progress`` in [0, 1] is the fraction
        of the schedule at the middle of this step (estimated from the previous step's duration
        under a time budget). Runs under autocast on CUDA when ``cfg.amp`` (on the CPU when
        ``cfg.cpu_amp``): compute the loss itself in float32.
    modules : sequence of nn.Module
        The trainable modules: moved to the device, put in train mode, optimized and checkpointed.
        Modules the step uses without training (e.g. a momentum encoder) are not listed here.
    images : np.ndarray
        uint8 array of shape (N, H, W, 3): the whole data set, held as one tensor on the device.
    cfg : TrainConfig
        Budget, optimizer, schedule, seed, device, evaluation and checkpoint settings.
    evaluate : EvaluateFn or None
        ``evaluate() -> accuracy``, called before the first step, every ``cfg.eval_every_s``
        training seconds and after the last step, with the training clock paused. Modules are
        put back in train mode afterwards.
    after_step : AfterStepFn or None
        Called after each optimizer step with the progress reached (outside autocast).

    Returns
    -------
    TrainResult
        The accuracy curve, training time, epochs, steps and per-epoch mean losses.

    Raises
    ------
    FloatingPointError
        If an epoch's mean loss is not finite.

    Notes
    -----
    On the CPU this calls :func:`tune_cpu_allocator` (a process-wide malloc setting).
    """
    run = _FitRun(step, modules, images, cfg, evaluate, after_step)
    with contextlib.ExitStack() as stack:
        if run.bar is not None:
            stack.callback(run.bar.close)
        stack.enter_context(torch.random.fork_rng(devices=_rng_devices(run.device)))
        run.train()
    result = run.result
    result.final_acc = result.curve[-1][1] if result.curve else None
    return result


class _EvalSchedule:
    """When to evaluate next: every ``eval_every_s`` training seconds and at each of ``eval_at_s``."""

    def __init__(self, cfg: TrainConfig) -> None:
        self._every = cfg.eval_every_s
        self._next_every = cfg.eval_every_s
        self._scheduled = sorted(cfg.eval_at_s or ())
        self.next = self._after(0.0)

    def due(self, now: float) -> bool:
        return self.next is not None and now >= self.next

    def advance(self, now: float) -> None:
        """Skip past ``now`` (an evaluation just ran)."""
        self.next = self._after(now)

    def _after(self, now: float) -> float | None:
        while self._next_every is not None and self._next_every <= now:
            self._next_every += self._every  # type: ignore[operator]
        while self._scheduled and self._scheduled[0] <= now:
            self._scheduled.pop(0)
        first_scheduled = self._scheduled[0] if self._scheduled else None
        candidates = [t for t in (self._next_every, first_scheduled) if t is not None]
        return min(candidates) if candidates else None


class _FitRun:
    """One :func:`fit` run: the setup in ``__init__``, the loop's steps as methods."""

    def __init__(
        self,
        step: StepFn,
        modules: Sequence[nn.Module],
        images: np.ndarray,
        cfg: TrainConfig,
        evaluate: EvaluateFn | None,
        after_step: AfterStepFn | None,
    ) -> None:
        self.modules = list(modules)
        if not self.modules:
            raise ValueError("fit: no modules to train")
        self.step_fn, self.cfg, self.evaluate, self.after_step = step, cfg, evaluate, after_step
        self.device = device = resolve_device(cfg.device)
        if device.type == "cpu":
            tune_cpu_allocator()
        self.data = _images_tensor(images, device)
        self.n = self.data.shape[0]
        self.batch_size = min(cfg.batch_size, self.n)
        self.steps_per_epoch = self.n // self.batch_size
        epochs = cfg.epochs
        self.total_steps = None if epochs is None else max(1, math.ceil(epochs * self.steps_per_epoch))
        for m in self.modules:
            m.to(device)
        self.optimizer = _make_optimizer(self.modules, cfg)
        self.autocast, use_scaler = _autocast(device, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        self.clock = _TrainClock(device)
        self.result = TrainResult()
        self.steps = 0  # optimizer steps so far
        self.epoch = 0  # completed epochs
        self.epoch_steps = 0  # steps in the current epoch
        self.loss_sum = torch.zeros((), device=device)  # of the current epoch
        self.last_dt = 0.0  # duration of the previous step
        self.schedule = _EvalSchedule(cfg)
        self.bar = _progress_bar(cfg, self.total_steps)

    def progress_at(self, steps_done: float, seconds: float) -> float:
        parts = []
        if self.total_steps is not None:
            parts.append(steps_done / self.total_steps)
        if self.cfg.time_budget_s is not None:
            parts.append(seconds / self.cfg.time_budget_s)
        return min(max(parts), 1.0)

    def run_eval(self) -> None:
        if self.evaluate is None:
            return
        with self.clock.paused(), torch.random.fork_rng(devices=_rng_devices(self.device)):
            at = self.clock.elapsed()
            # fork_rng: an evaluation must not shift the training RNG stream.
            acc = float(self.evaluate())
        for m in self.modules:
            m.train()
        self.result.curve.append((at, acc))

    def train(self) -> None:
        """Seed, evaluate at t=0, run epochs until the budget is spent, evaluate and save at the end."""
        torch.manual_seed(self.cfg.seed)
        shuffle = torch.Generator().manual_seed(self.cfg.seed)
        for m in self.modules:
            m.train()
        self.run_eval()
        self.clock.start()
        done = False
        while not done:
            done = self._run_epoch(shuffle)
        self.clock.pause()
        result = self.result
        result.steps = self.steps
        result.epochs = self.steps / self.steps_per_epoch
        result.train_seconds = self.clock.elapsed()
        self.run_eval()
        if self.ckpt_dir is not None:
            self._checkpoint(self.ckpt_dir / CHECKPOINT_LAST, result.epochs, result.train_seconds)

    def _run_epoch(self, shuffle: torch.Generator) -> bool:
        """One pass over a fresh permutation (cut short at the end of the budget); True when done."""
        order = torch.randperm(self.n, generator=shuffle).to(self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.epoch_steps = 0
        done = False
        for b in range(self.steps_per_epoch):
            now = self._train_step(order[b * self.batch_size : (b + 1) * self.batch_size])
            done = self._after_train_step(now)
            if done:
                break
        self._end_epoch()
        return done

    def _train_step(self, idx: torch.Tensor) -> float:
        """One optimizer step on the rows ``idx``; returns the training time after it."""
        t0 = self.clock.elapsed()
        progress = self.progress_at(self.steps + 0.5, t0 + 0.5 * self.last_dt)
        factor = lr_factor(progress, self.cfg.warmup_frac)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor
        with self.autocast:
            loss = self.step_fn(self.data[idx], idx, progress)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps += 1
        self.epoch_steps += 1
        self.loss_sum += loss.detach().float()
        now = self.clock.elapsed()
        self.last_dt = now - t0
        return now

    def _after_train_step(self, now: float) -> bool:
        """Momentum hook, progress bar and due evaluations after a step; True when the budget is spent."""
        reached = self.progress_at(self.steps, now)
        if self.after_step is not None:
            self.after_step(reached)
        if self.bar is not None:
            _update_bar(self.bar, self.steps, reached, self.epoch + self.epoch_steps / self.steps_per_epoch)
        budget = self.cfg.time_budget_s
        done = (self.total_steps is not None and self.steps >= self.total_steps) or (
            budget is not None and now >= budget
        )
        # The final evaluation happens after the loop, so never twice at the last step.
        if self.schedule.due(now) and not done:
            self.run_eval()
            self.schedule.advance(now)
        return done

    def _end_epoch(self) -> None:
        """Record the epoch's mean loss; checkpoint a completed epoch."""
        mean_loss = float(self.loss_sum) / max(self.epoch_steps, 1)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"fit: non-finite mean loss {mean_loss} in epoch {self.epoch + 1}")
        self.result.losses.append(mean_loss)
        if self.epoch_steps == self.steps_per_epoch:
            self.epoch += 1
            if self.ckpt_dir is not None:
                with self.clock.paused():
                    path = self.ckpt_dir / CHECKPOINT_EPOCH.format(self.epoch)
                    self._checkpoint(path, float(self.epoch), self.clock.elapsed())

    def _checkpoint(self, path: Path, epoch: float, train_seconds: float) -> None:
        _save_checkpoint(path, self.modules, epoch=epoch, step=self.steps, train_seconds=train_seconds)


def _progress_bar(cfg: TrainConfig, total_steps: int | None) -> Any:
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    # Under a time budget the bar counts percent of the budget, else steps.
    total = total_steps if cfg.time_budget_s is None else 100
    unit = "step" if cfg.time_budget_s is None else "%"
    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


def _update_bar(bar: Any, steps: int, progress: float, epochs: float) -> None:
    n = steps if bar.unit == "step" else int(100 * progress)
    if n != bar.n:
        bar.update(n - bar.n)
        bar.set_postfix(epoch=f"{epochs:.2f}", refresh=False)
