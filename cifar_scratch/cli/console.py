"""What the commands print: training progress, and their results as text tables and lines.

Commands compute through the Python API and hand the results here; nothing here computes.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from cifar_scratch.runs.index import age
from cifar_scratch.tables import text_table
from cifar_scratch.training.trainer import Callback, Trainer


class ConsoleReport(Callback):
    """A tqdm bar per epoch on a terminal (running means, learning rate); otherwise one plain line per
    epoch plus a heartbeat line every ``heartbeat_s`` seconds, so a log file shows progress within long epochs."""

    def __init__(self, stream=None, heartbeat_s: float = 30.0):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.heartbeat_s = heartbeat_s
        self.bar: tqdm | None = None
        self._next_beat = 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        self._print(trainer.model.summary())
        for reason in trainer.dataset.passed_over:
            self._print(f"data.source: skipped {reason}")
        self._print(
            f"{trainer.dataset.description}: {len(trainer.dataset.train)} train / "
            f"{len(trainer.dataset.val)} val / {len(trainer.dataset.test)} test images"
        )
        if not len(trainer.dataset.val):
            self._print(f"no validation split: {trainer.monitor} picks the best epoch")
        self._print(f"run folder: {trainer.run_dir}")
        self._started, self._steps_at_start = time.perf_counter(), trainer.state.step
        self._next_beat = self._started + self.heartbeat_s

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.interactive:
            self.bar = tqdm(
                total=trainer.steps_per_epoch,
                initial=trainer.state.batch_in_epoch,
                file=self.stream,
                desc=f"epoch {epoch}/{trainer.config.training.epochs}",
                unit="batch",
                leave=False,
            )

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        running = trainer.state.running
        seen = max(1, running["seen"])
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 or batch == batches:
                self.bar.set_postfix(
                    loss=f"{running['loss_sum'] / seen:.4f}",
                    acc=f"{running['correct'] / seen:.3f}",
                    lr=f"{trainer.state.lrs[-1]:.3g}",
                    refresh=False,
                )
        elif time.perf_counter() >= self._next_beat:
            self._heartbeat(trainer, batch, batches, running, seen)

    def _heartbeat(self, trainer: Trainer, batch: int, batches: int, running: dict, seen: int) -> None:
        now = time.perf_counter()
        self._next_beat = now + self.heartbeat_s
        done = trainer.state.step - self._steps_at_start
        total = trainer.steps_per_epoch * trainer.config.training.epochs - self._steps_at_start
        rate = done / max(now - self._started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        images = rate * trainer.config.training.batch_size
        self._print(
            f"  epoch {trainer.state.epoch + 1} batch {batch}/{batches}  loss {running['loss_sum'] / seen:.4f}  "
            f"acc {running['correct'] / seen:.4f}  lr {trainer.state.lrs[-1]:.3g}  {images:,.0f} img/s  "
            f"run ETA {duration(eta)}"
        )

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        best = " *" if trainer.state.best_epoch == row["epoch"] else ""
        parts = [f"epoch {row['epoch']:>3}/{trainer.config.training.epochs}"]
        for key, label in (
            ("train_loss", "loss"),
            ("train_accuracy", "acc"),
            ("val_loss", "val_loss"),
            ("val_accuracy", "val_acc"),
        ):
            if row[key] is not None:  # no validation split (or a diverged epoch): no validation figures
                parts.append(f"{label} {figure(row[key])}")
        parts += [f"lr {row['lr']:.3g}", f"{row['epoch_time']:.1f}s{best}"]
        self._print("  ".join(parts))

    def on_warning(self, trainer: Trainer, message: str) -> None:
        self._print(f"warning: {message}")

    def on_train_end(self, trainer: Trainer) -> None:
        best = trainer.state.best_epoch
        self._print(f"stopped: {trainer.state.stop_reason}; " + (f"best epoch {best}" if best else "no best epoch"))

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def figure(value: float) -> str:
    """Four decimals, with no minus sign on a value that rounds to zero (a loss of -1e-9 is 0.0000)."""
    text = f"{value:.4f}"
    return text[1:] if text == "-0.0000" else text


def duration(seconds: float) -> str:
    """``1h05m`` or ``4m09s``; ``?`` for an unknown (infinite) time."""
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def shape_text(shape) -> str:
    return "x".join(map(str, shape))


# --------------------------------------------------------------------------- train, evaluate, predict
def training_result(metrics: dict) -> str:
    """The line after training: the best weights' accuracies (and TTA's)."""
    keys = ("train_accuracy", "val_accuracy", "test_accuracy", "test_accuracy_tta")
    summary = "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if metrics.get(k) is not None)
    if metrics.get("test_accuracy_tta") is not None:
        summary += f"  (TTA: {metrics['tta']}; training took {metrics['train_time_s']:.0f} s)"
    return f"best weights (epoch {metrics['best_epoch']}): {summary}"


def evaluation(split: str, metrics: dict) -> str:
    """Accuracy, macro F1 and loss of a split, plain and with TTA, then the per-class report."""
    lines = [
        f"{split}, plain: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
        f"loss {metrics['loss']:.4f}  ({metrics['samples']} images, {metrics['checkpoint']})"
    ]
    if metrics["tta"] != "none":
        lines.append(
            f"{split}, TTA {metrics['tta']}: accuracy {metrics['accuracy_tta']:.4f}  "
            f"macro F1 {metrics['macro_f1_tta']:.4f}  loss {metrics['loss_tta']:.4f}"
        )
    lines += [f"report of {metrics['report_of']}:", metrics["report"].rstrip()]
    return "\n".join(lines)


def predictions(results: list[dict]) -> str:
    """One line per image: its top classes with their probabilities."""
    return "\n".join(
        f"{r['image']}: " + "  ".join(f"{p['class']} {p['probability']:.3f}" for p in r["predictions"]) for r in results
    )


# --------------------------------------------------------------------------- gradcheck, benchmark
GRADCHECK_TITLES = {"layers": "per layer (float64)", "model": "end to end through the loss (float64)"}


def gradcheck(results: dict[str, list], threshold: float, torch_threshold: float, torch_dtype: str) -> str:
    """The tables of :func:`cifar_scratch.diagnostics.gradcheck.run_checks`'s results, each row ok or FAIL."""
    blocks = []
    for key, title in GRADCHECK_TITLES.items():
        if key in results:
            rows = [
                [
                    r.layer,
                    r.tensor,
                    shape_text(r.shape),
                    str(r.checked),
                    f"{r.max_relative_error:.2e}",
                    str(r.worst_index),
                    "ok" if r.max_relative_error < threshold else "FAIL",
                ]
                for r in results[key]
            ]
            header = ["layer", "tensor", "shape", "checked", "max rel. error", "worst element", "result"]
            blocks.append(f"\n{title}\n{text_table(header, rows)}")
    if "torch" in results:
        rows = [
            [
                r.layer,
                r.tensor,
                shape_text(r.shape),
                f"{r.max_abs_diff:.2e}",
                f"{r.relative_diff:.2e}",
                "ok" if r.relative_diff < torch_threshold else "FAIL",
            ]
            for r in results["torch"]
        ]
        blocks.append(
            f"\nagainst PyTorch ({torch_dtype}, same weights, dropout off, batch-norm batch statistics)\n"
            + text_table(["layer", "tensor", "shape", "max abs. diff", "rel. diff", "result"], rows)
        )
    return "\n".join(blocks)


def benchmark(r: dict, name: str, batch: int, steps: int, repeats: int, threads: str, engine: str) -> str:
    """The header, the images/s table (and the ratio to PyTorch), memory, GFLOP/s and the per-layer table
    of :func:`cifar_scratch.diagnostics.benchmark.run_benchmark`'s result ``r``."""
    m = r["machine"]
    lines = [
        f"{name}: batch {batch}, {repeats} x {steps} steps, threads {threads}, {engine} kernels"
        + (f" ({r['conv_algorithm']} 3x3 convolutions)" if engine == "fast" and "conv_algorithm" in r else ""),
        f"machine: {m['cpu']} ({m['cores']} cores, {m['isa']}), numpy {m['numpy']}"
        + (f" (SIMD up to {m['numpy_simd']})" if m["numpy_simd"] else "")
        + f", BLAS {', '.join(m['blas'])}"
        + (
            f", torch {r['torch']['version']} (ATen {r['torch']['aten_cpu_capability']} kernels, oneDNN up to "
            f"{r['torch']['onednn_max_cpu_isa'] or 'the CPU'})"
            if r["torch"]
            else ""
        ),
    ]
    if m["openblas_coretype"]:
        lines.append(
            f"note: OPENBLAS_CORETYPE={m['openblas_coretype']} pins OpenBLAS's kernels (unset it to let it pick this CPU's)"
        )
    if m["numpy_disabled_features"]:
        lines.append(
            f"note: NPY_DISABLE_CPU_FEATURES={m['numpy_disabled_features']} keeps NumPy's own loops off those SIMD targets"
        )
    rows = [
        [
            phase,
            who,
            f"{t['images_per_s_median']:,.0f}",
            f"{t['images_per_s_min']:,.0f}-{t['images_per_s_max']:,.0f}",
            f"{t['step_ms_median']:.1f}",
        ]
        for phase in ("train", "inference")
        for who in ("ours", "torch")
        if (t := r[phase].get(who)) is not None
    ]
    lines.append(text_table(["phase", "engine", "images/s (median)", "range", "ms/step"], rows))
    if r["torch"]:
        lines.append(
            f"ours / torch: train {r['train']['ratio']:.2f}x, inference {r['inference']['ratio']:.2f}x (same run, interleaved)"
        )
    lines.append(f"peak memory of a training step: {r['peak_memory_mb']:,.0f} MB (NumPy arrays, tracemalloc)")
    winograd = engine == "fast" and r.get("conv_algorithm", "im2col") != "im2col"
    lines.append(
        f"GEMM work per training step: {r['gflop_per_train_step']:.2f} GFLOP -> {r['achieved_gflops']:.0f} GFLOP/s "
        f"{'effective (as direct convolution; Winograd multiplies less)' if winograd else 'achieved'}; "
        f"float32 GEMM peak here: {r['gemm_peak_gflops']:.0f} GFLOP/s"
    )
    total = sum(row["forward_ms"] + row["backward_ms"] for row in r["layers"]) or 1.0
    layers = [
        [
            row["layer"],
            shape_text(row["output_shape"]),
            f"{row['forward_ms']:.1f}",
            f"{row['backward_ms']:.1f}",
            f"{(row['forward_ms'] + row['backward_ms']) / total:.0%}",
            f"{row['gflop']:.2f}",
        ]
        for row in r["layers"]
    ]
    lines.append(text_table(["layer", "output", "forward ms", "backward ms", "share", "GFLOP"], layers))
    return "\n".join(lines)


# --------------------------------------------------------------------------- sweep, runs
def lr_find(result, overrides: list[str]) -> str:
    """The range test's outcome: where it stopped and the suggested rate, as overrides to train with."""
    lines = [f"{len(result.lrs)} steps from lr {result.lrs[0]:.3g} to {result.lrs[-1]:.3g}; stopped: {result.stop_reason}"]
    if overrides:
        lines.append(f"suggested (steepest fall of the smoothed loss): {' '.join(overrides)}")
        lines.append(
            f"the smoothed loss is lowest at lr {result.lowest:.3g} (a tenth of it, {result.lowest / 10:.3g}, is fastai's older rule)"
        )
    else:
        lines.append("no suggestion: the smoothed loss never fell; try a lower --start-lr or more --steps")
    lines.append(f"plot: {result.folder / 'lr_find.png'}")
    return "\n".join(lines)


def sweep_plan(plan) -> str:
    """What a sweep is about to do (:class:`cifar_scratch.sweeps.SweepPlan`)."""
    spec = plan.spec
    size = f"bayes search of {spec.run_cap} jobs, {plan.jobs} so far, " if spec.method == "bayes" else f"{plan.jobs} jobs, "
    resumed = f" ({plan.resumed} resumed)" if plan.resumed else ""
    return f"sweep {plan.folder}: {size}{plan.done} done, {plan.todo} to run{resumed}; {plan.where}"


def sweep_outcome(outcome) -> str:
    """One line per finished job (:class:`cifar_scratch.sweeps.JobOutcome`)."""
    where = f"  {outcome.run_dir}" if outcome.run_dir else ""
    why = f"  ({outcome.error})" if outcome.error and outcome.status != "completed" else ""
    return (
        f"job {outcome.job.index:>3} {outcome.status:<11} {outcome.seconds:7.1f}s  {' '.join(outcome.job.overrides)}{where}{why}"
    )


def runs_table(summaries: list, now: float) -> str:
    """Past runs (:class:`cifar_scratch.runs.index.RunSummary`), one row each."""
    rows = []
    for s in summaries:
        best = f"{s.monitor} {s.best_value:.4f} @{s.best_epoch}" if s.best_value is not None and s.monitor else "-"
        test = s.metrics.get("test_accuracy_tta", s.metrics.get("test_accuracy"))
        rows.append(
            [
                s.path.name,
                s.status,
                f"{s.epochs_done}/{s.epochs if s.epochs is not None else '?'}",
                best,
                f"{test:.4f}" if isinstance(test, (int, float)) else "-",
                age(now - s.started) if s.started else "-",
                " ".join(s.overrides) or "-",
            ]
        )
    return text_table(["run", "status", "epochs", "best", "test acc", "age", "overrides"], rows)
