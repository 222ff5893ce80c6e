"""compare's table: what differs between runs, seeds grouped but never hidden, figures to their precision."""

from pathlib import Path

from cifar_scratch.runs import compare
from cifar_scratch.runs.index import RunSummary


def run(name, seed, lr, epochs, accuracy, seconds=0.169):
    config = {"name": "x", "optimizer": {"lr": lr}, "training": {"seed": seed, "epochs": epochs}}
    metrics = {"val_accuracy": accuracy, "train_time_s": seconds}
    return RunSummary(Path(name), "x", "completed", 0.0, epochs, epochs, "val_accuracy", accuracy, 1, metrics, config)


def test_runs_that_differ_in_seed_and_more_keep_their_seed_column():
    runs = [run("a", 0, 0.1, 5, 0.5), run("b", 1, 0.2, 5, 0.6), run("c", 2, 0.1, 10, 0.7)]
    columns, rows = compare.table(runs)
    assert columns[:4] == ["run", "optimizer.lr", "training.epochs", "training.seed"] and "n" not in columns
    assert [row["training.seed"] for row in rows] == [0, 1, 2]


def test_a_group_of_seeds_lists_its_seeds():
    runs = [run("a", 0, 0.1, 5, 0.5), run("b", 1, 0.1, 5, 0.6), run("c", 2, 0.2, 5, 0.7)]
    columns, rows = compare.table(runs)
    assert columns[:5] == ["run", "optimizer.lr", "training.seed", "status", "n"]
    assert [(row["run"], row["training.seed"], row["n"]) for row in rows] == [("2 runs", "0, 1", 2), ("c", 2, 1)]


def test_mean_and_std_are_shown_to_the_same_decimals():
    assert compare.cell((0.169, 7.37e-05, 2), "train_time_s") == "0.169 ± 0.000"
    assert compare.cell((123.45, 2.5, 2), "train_time_s") == "123.5 ± 2.5"
    assert compare.cell((0.91234, 0.0026, 3), "val_accuracy") == "0.9123 ± 0.0026"
    assert compare.cell(0.0123, "train_time_s") == "0.0123" and compare.cell(0.5, "val_accuracy") == "0.5000"
