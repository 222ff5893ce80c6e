"""The Python API: train from a config or from arrays in memory, read a run back, predict, stop from a callback."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

import cifar_scratch as cs
from cifar_scratch.data import arrays as array_data
from cifar_scratch.errors import DataError, UsageError
from tests.conftest import digits_tree


@pytest.fixture(scope="module")
def digits_arrays():
    """scikit-learn's digits as a notebook would hold them: uint8 (N, 8, 8) images, integer labels."""
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return images[:1400], bunch.target[:1400], images[1400:], bunch.target[1400:]


def small_tree(**training):
    tree = digits_tree(**{"epochs": 3, **training})
    tree["data"] = {"dataset": "digits", "val_fraction": 0.2}  # data= replaces it with the arrays
    return tree


@pytest.mark.slow
def test_train_on_arrays_in_memory_then_read_predict_and_evaluate_the_run(tmp_path, digits_arrays):
    x_train, y_train, x_test, y_test = digits_arrays
    run = cs.train(small_tree(), "training.epochs=2", data=digits_arrays, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    assert run.path.parent == tmp_path / "runs"
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    assert run.metrics["stop_reason"] == "completed" and run.metrics["test_accuracy"] > 0.3  # chance is 0.1
    assert run.config.data.dataset == "npz" and run.config.training.epochs == 2
    stored = list((tmp_path / "data" / "arrays").glob("*.npz"))
    assert len(stored) == 1 and run.config.data.source == str(stored[0])

    probabilities = run.predict(x_test[:50])
    assert probabilities.shape == (50, 10) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    evaluated = run.evaluate("test")
    assert evaluated["samples"] == len(x_test) and evaluated["accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    predicted = run.predict(x_test).argmax(axis=1)
    assert np.mean(predicted == y_test) == pytest.approx(evaluated["accuracy"])

    again = cs.load_run(run.path)
    assert again.history == run.history and again.metrics == run.metrics
    with pytest.raises(UsageError, match=r"images: uint8 of shape \(N, 8, 8, 1\)"):
        run.predict(x_test.astype(np.float32))

    # The same arrays are stored once; the run resumes from them like any other.
    cs.train(small_tree(), "training.epochs=1", data=digits_arrays, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    assert len(list((tmp_path / "data" / "arrays").glob("*.npz"))) == 1
    assert run.resume("training.epochs=3").history[-1]["epoch"] == 3.0


def test_an_npz_file_named_by_a_config(tmp_path, digits_arrays):
    x_train, y_train, _, _ = digits_arrays
    names = np.array([f"digit {i}" for i in range(10)])
    np.savez(tmp_path / "mine.npz", x_train=x_train, y_train=y_train, class_names=names)
    tree = small_tree()
    tree["data"] = {"dataset": "npz", "source": "mine.npz", "test_fraction": 0.2}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(tree))
    run = cs.train(tmp_path / "mine.yaml", "training.epochs=1", runs_dir=tmp_path / "runs")
    assert run.metrics["class_names"][3] == "digit 3" and "test_accuracy" in run.metrics
    assert run.info["sizes"]["test"] == 280, "no test split in the file: 20% held out"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x_train": lambda a: a.astype(np.float32)}, "x_train is float32; give uint8 pixels 0..255"),
        ({"y_train": lambda a: a[:-1]}, "x_train holds 1400 images, y_train 1399 labels"),
        ({"y_train": lambda a: a.astype(np.float64)}, "y_train must be a 1-D array of integer labels"),
        ({"x_train": lambda a: a[:, :, :, None, None]}, "x_train must be (N, H, W, C) with C = 1 or 3"),
        ({"class_names": lambda a: np.array(["a", "b"])}, "a label is 9, but class_names names 2 classes"),
        ({"y_test": None}, "x_test and y_test go together"),
        ({"x_val": lambda a: a}, "unknown array 'x_val'"),
    ],
)
def test_arrays_are_checked_with_one_line_naming_the_array(tmp_path, digits_arrays, change, message):
    x_train, y_train, x_test, y_test = digits_arrays
    arrays = {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.arange(10).astype(str),
    }
    for key, edit in change.items():
        if edit is None:
            del arrays[key]
        else:
            arrays[key] = edit(arrays.get(key, x_train))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        array_data.load(tmp_path / "bad.npz")
    assert str(info.value).startswith(f"{tmp_path / 'bad.npz'}: ") and message in str(info.value)


def test_a_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="not a readable .npz of arrays"):
        array_data.load(tmp_path / "objects.npz")


class StopAtEpoch(cs.Callback):
    def __init__(self, epoch):
        self.epoch, self.rows = epoch, []

    def on_epoch_end(self, trainer, row):
        self.rows.append(row)
        if row["epoch"] == self.epoch:
            trainer.stop(f"stopped at epoch {self.epoch}")


def test_a_callback_sees_every_epoch_and_stops_the_run_cleanly(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(small_tree(epochs=6)))
    stopper = StopAtEpoch(2)
    run = cs.train(tmp_path / "tiny.yaml", callbacks=[stopper], runs_dir=tmp_path / "runs")
    assert [row["epoch"] for row in stopper.rows] == [1, 2] and len(run.history) == 2
    assert run.metrics["stop_reason"] == "stopped at epoch 2" and run.info["status"] == "completed"
    assert (run.path / "checkpoints" / "best.npz").is_file() and "test_accuracy" in run.metrics


def test_a_model_by_hand():
    model = cs.build_model(
        {"data": {"dataset": "digits"}, "model": {"layers": ["flatten", {"type": "dense", "units": 5}, "relu", "dense"]}}
    )
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    logits = model.forward(x)
    assert logits.shape == (4, 10) and model.backward(np.ones_like(logits)).shape == x.shape
    assert set(model.grads) == set(model.params) == {"dense1.weight", "dense1.bias", "dense2.weight", "dense2.bias"}


def test_importing_the_package_stays_light():
    code = "import sys, cifar_scratch; assert 'numpy' not in sys.modules; cifar_scratch.train; assert 'numpy' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lr_find_and_report_from_python(tmp_path):
    found = cs.lr_find(digits_tree(batch_size=32), out=tmp_path / "find", steps=40)
    assert found.folder == tmp_path / "find" and (found.folder / "lr_find.png").is_file()
    assert len(found.lrs) == len(found.losses) <= 40 and found.lrs[0] == pytest.approx(1e-7)
    run = cs.train(digits_tree(plots=True, epochs=1), runs_dir=tmp_path / "runs")
    page = cs.report(run.path, out=tmp_path / "page.html")
    assert page == tmp_path / "page.html" and "<img src='data:image/png;base64," in page.read_text(encoding="utf-8")
    with pytest.raises(UsageError, match="start_lr must be below end_lr"):
        cs.lr_find(digits_tree(), start_lr=1.0, end_lr=0.1)
