"""Train swish.yaml from Python, stop early from a callback, and use the trained run.

python examples/custom_layer/train_swish.py [RUNS_DIR]
"""

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import cifar_scratch as cs

HERE = Path(__file__).resolve().parent


class StopAtTarget(cs.Callback):
    """Ends the run after the first epoch whose validation accuracy reaches ``target``."""

    def __init__(self, target: float):
        self.target = target

    def on_epoch_end(self, trainer, row):
        print(f"epoch {row['epoch']}: val_accuracy {row['val_accuracy']:.3f}")
        if row["val_accuracy"] >= self.target:
            trainer.stop(f"val_accuracy reached {self.target}")


def main(runs_dir: str = "runs") -> cs.Run:
    run = cs.train(HERE / "swish.yaml", callbacks=[StopAtTarget(0.95)], runs_dir=runs_dir)
    print(run.path, run.metrics["stop_reason"], f"test accuracy {run.metrics['test_accuracy']:.3f}")
    print("trained beta of the first Swish:", np.round(run.load_model()[0].params["swish1.beta"][:4], 3))

    digits = load_digits()
    images = np.round(digits.images[:5] * (255 / 16)).astype(np.uint8)  # uint8 pixels, as the run trained on
    print("predicted:", run.predict(images).argmax(axis=1), "true:", digits.target[:5])
    return run


if __name__ == "__main__":
    main(*sys.argv[1:])
