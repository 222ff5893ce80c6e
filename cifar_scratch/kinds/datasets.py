"""Dataset kinds: one record each, the one place a dataset is declared.

A record (:class:`DatasetKind`) says what ``data.dataset: NAME`` means:

- ``load(config, source, data_dir, progress) -> Loaded``: one source of the dataset (``official``, a
  path, or None for a dataset that takes no source) as :class:`~cifar_scratch.data.Split` objects of
  uint8 images (N, H, W, C) with the class names and a description; ``test`` (``val``) is None when
  the source has no test (validation) split, which is then held out of train. A source that is not there raises
  :class:`~cifar_scratch.errors.DataUnavailable`, so that the next of ``data.source``'s candidates is tried;
- ``image_shape`` and ``class_names``: what is known without loading (None: only the data can tell);
- which ``data.source`` values it takes: ``official`` (an official release, in the data dir or
  downloaded), a path, or none at all.

The config's ``data.dataset`` choices, the loader and the model's input shape read :data:`DATASET_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The data package's modules, not its __init__'s names: the config imports this module while
# cifar_scratch.data may still be importing (its validators run when the schema is built).
from cifar_scratch.data import arrays, cifar10, digits, imagefolder, mnist
from cifar_scratch.errors import DataError, DataUnavailable
from cifar_scratch.options import OFFICIAL_SOURCE


@dataclass(frozen=True)
class DatasetKind:
    """One dataset: how to load it and what is known of it beforehand (see the module docstring)."""

    name: str
    load: Callable
    image_shape: tuple[int, int, int] | None = None
    class_names: tuple[str, ...] | None = None
    official: bool = False  # data.source may be 'official' (the default when it is null)
    paths: bool = True  # data.source may be a path
    needs_source: bool = False  # data.source is required


#: Every dataset kind by name, in the order registered.
DATASET_KINDS: dict[str, DatasetKind] = {}


def register_dataset(kind: DatasetKind) -> DatasetKind:
    """Add a dataset kind; configs accept ``data.dataset: <its name>`` from then on."""
    if kind.name in DATASET_KINDS:
        raise ValueError(f"a dataset kind named {kind.name!r} is registered already")
    DATASET_KINDS[kind.name] = kind
    return kind


def _split(arrays: dict, name: str):
    from cifar_scratch.data import Split

    return Split(arrays[f"{name}_images"], arrays[f"{name}_labels"]) if f"{name}_images" in arrays else None


def _image_folder(config, path: Path, data_dir: Path, progress: bool, what: str, hint: str = ""):
    """A folder or archive of ``<class>/*`` or ``<split>/<class>/*`` images (:mod:`cifar_scratch.data.imagefolder`)."""
    from cifar_scratch.data import Loaded

    if not path.exists():
        raise DataUnavailable(f"data.source: {path} does not exist{hint}")
    size = tuple(config.image_size) if config.image_size else None
    arrays = imagefolder.load(path, data_dir / "imagefolder", progress, size)
    ignored = [str(n) for n in arrays["ignored"]]
    description = f"{what} ({path})" + (
        f"; {len(ignored)} file{'s' * (len(ignored) > 1)} that {'are' if len(ignored) > 1 else 'is'} no image ignored: "
        + ", ".join(Path(n).name for n in ignored[:3])
        + (", ..." if len(ignored) > 3 else "")
        if ignored
        else ""
    )
    names = tuple(str(n) for n in arrays["class_names"])
    return Loaded(_split(arrays, "train"), _split(arrays, "test"), names, description, _split(arrays, "val"))


# --------------------------------------------------------------------------- CIFAR-10
def _load_cifar10(config, source: str, data_dir: Path, progress: bool):
    """The official python release, or a folder or archive in CIFAR-10 layout (the JPEG copy, say)."""
    from cifar_scratch.data import Loaded, Split

    if source == OFFICIAL_SOURCE:
        folder = cifar10.prepare(data_dir, config.download, progress)
        train, test, names = cifar10.load(folder)
        return Loaded(Split(*train), Split(*test), names, f"CIFAR-10 (official python release, {folder})")
    path = Path(source).expanduser()
    alone = len(config.sources) == 1
    hint = f" (set data.source={OFFICIAL_SOURCE} to use the official CIFAR-10 release)" if alone else ""
    loaded = _image_folder(config, path, data_dir, progress, "CIFAR-10 copy", hint)
    if loaded.class_names != cifar10.CLASSES:
        raise DataError(f"data.source: {path} has classes {list(loaded.class_names)}, not the 10 CIFAR-10 classes")
    return loaded


register_dataset(DatasetKind("cifar10", _load_cifar10, (32, 32, 3), cifar10.CLASSES, official=True))


# --------------------------------------------------------------------------- MNIST and Fashion-MNIST
def _idx_loader(release: mnist.Release):
    def load(config, source: str, data_dir: Path, progress: bool):
        """The four official IDX files: the folder ``source``, or the official release (data dir, OS packages, mirrors)."""
        from cifar_scratch.data import Loaded

        arrays, folder = mnist.load(
            release, data_dir, config.download, progress, None if source == OFFICIAL_SOURCE else Path(source)
        )
        description = f"{release.title} (official IDX files, {folder})"
        return Loaded(_split(arrays, "train"), _split(arrays, "test"), release.classes, description)

    return load


for _name, _release in mnist.RELEASES.items():
    register_dataset(DatasetKind(_name, _idx_loader(_release), (28, 28, 1), _release.classes, official=True))


# --------------------------------------------------------------------------- scikit-learn's digits
def _load_digits(config, source, data_dir: Path, progress: bool):
    """scikit-learn's bundled 8x8 digits: offline, no source."""
    from cifar_scratch.data import Loaded, Split

    images, labels = digits.load()
    return Loaded(Split(images, labels), None, digits.CLASSES, "scikit-learn digits (8x8)")


register_dataset(DatasetKind("digits", _load_digits, (8, 8, 1), digits.CLASSES, paths=False))


# --------------------------------------------------------------------------- any image folder
def _load_imagefolder(config, source: str, data_dir: Path, progress: bool):
    return _image_folder(config, Path(source).expanduser(), data_dir, progress, "image folder")


register_dataset(DatasetKind("imagefolder", _load_imagefolder, needs_source=True))


# --------------------------------------------------------------------------- arrays in an .npz
def _load_npz(config, source: str, data_dir: Path, progress: bool):
    """x_train, y_train (and x_test, y_test, class_names) of an .npz file (:mod:`cifar_scratch.data.arrays`)."""
    from cifar_scratch.data import Loaded, Split

    path = Path(source).expanduser()
    if not path.is_file():
        raise DataUnavailable(f"data.source: {path} does not exist")
    train, test, names = arrays.load(path)
    return Loaded(Split(*train), (Split(*test) if test is not None else None), names, f"arrays ({path})")


register_dataset(DatasetKind("npz", _load_npz, needs_source=True))
