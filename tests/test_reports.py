"""Figures: what they show, and that they are written whole."""

import numpy as np

from cifar_scratch import reports


def capture(monkeypatch):
    figures = {}

    def keep(fig, path):
        figures[path.name] = fig

    monkeypatch.setattr(reports, "_save", keep)
    return figures


def test_normalized_confusion_colours_span_zero_to_one(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    reports.plot_confusion([[5, 1], [0, 2]], ("cat", "dog"), tmp_path, "test")
    assert figures["confusion_matrix_normalized.png"].axes[0].images[0].get_clim() == (0, 1)
    assert figures["confusion_matrix.png"].axes[0].images[0].get_clim()[0] == 0


def test_history_has_integer_epoch_ticks_and_marks_the_best_epoch(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5, "val_accuracy": 0.4} for e in (1, 2, 3)
    ]
    reports.plot_history(history, tmp_path, best_epoch=2)
    ax = figures["loss.png"].axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert "best epoch (2)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_lr_plot_draws_the_rates_given(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    reports.plot_lr([0.1, 0.2, 0.3, 0.05], 2, "cosine", tmp_path / "lr.png")
    (line,) = figures["lr.png"].axes[0].get_lines()
    assert list(line.get_ydata()) == [0.1, 0.2, 0.3, 0.05] and list(line.get_xdata()) == [0.5, 1.0, 1.5, 2.0]


def test_grid_captions_mark_right_and_wrong_beyond_colour(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    images = np.zeros((2, 4, 4, 3), np.uint8)
    reports.plot_image_grid(images, ["cat", "dog"], [True, False], tmp_path / "g.png", "title")
    titles = [ax.get_title() for ax in figures["g.png"].axes if ax.get_title()]
    assert titles == ["\u2713 cat", "\u2717 dog"]


def test_figures_go_through_a_temporary_name(tmp_path):
    reports.plot_lr([0.1, 0.2], 1, "constant", tmp_path / "lr.png")
    assert [p.name for p in tmp_path.iterdir()] == ["lr.png"]
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_without_a_validation_split_draws_no_validation_entry(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": None, "train_accuracy": 0.5, "val_accuracy": None} for e in (1, 2)]
    reports.plot_history(history, tmp_path, best_epoch=2)
    for name in ("loss.png", "accuracy.png"):
        assert [t.get_text() for t in figures[name].axes[0].get_legend().get_texts()] == ["train", "best epoch (2)"]


def test_a_swept_seed_is_drawn_on_a_categorical_axis(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    panels = [
        ("training.seed", "val_accuracy", [10, 2, 0, 2], [0.5, 0.6, 0.7, 0.8]),
        ("optimizer.lr", "val_accuracy", [0.1, 0.01], [0.5, 0.6]),
    ]
    reports.plot_comparison([], tmp_path / "compare.png", panels)
    seed, lr = figures["compare.png"].axes[1:3]
    assert [t.get_text() for t in seed.get_xticklabels()] == ["0", "2", "10"]
    assert list(seed.get_lines()[0].get_xdata()) == [2, 1, 0, 1]
    assert list(lr.get_lines()[0].get_xdata()) == [0.1, 0.01]  # a rate stays a number
