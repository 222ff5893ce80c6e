"""From a YAML file and ``dotted.key=value`` overrides to a validated :class:`RunConfig`, and back.

Every way a file or an override can be wrong becomes one line in a :class:`ConfigError`; the run
folder's ``config.yaml`` is :func:`dump_config` of the validated object, and loading it gives it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cifar_scratch.config.messages import format_error, short, short_text
from cifar_scratch.config.schema import RunConfig
from cifar_scratch.errors import ConfigError
from cifar_scratch.fileio import open_regular
from cifar_scratch.kinds import user
from cifar_scratch.options import OFFICIAL_SOURCE

#: A config is a few hundred bytes; anything near this is not a config.
MAX_CONFIG_BYTES = 1_000_000
#: Values a config may expand to: YAML aliases can make 600 bytes mean billions of values.
MAX_CONFIG_VALUES = 100_000


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure mode as one ConfigError line: syntax, nesting too deep for
    Python's recursion limit, integers too long to convert, and alias bombs (checked after loading:
    the loaded tree shares its repeated nodes, so it is small; walking it counts the expansion)."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise ConfigError(f"{at}: invalid YAML ({getattr(exc, 'problem', None) or short_text(str(exc))})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise ConfigError(f"{where}: invalid value: a number longer than Python converts (4,300 digits)") from None
    if _count_values(tree, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases?); not a config")
    return tree


def _count_values(node: Any, limit: int, depth: int = 0) -> int:
    """Values in ``node`` with shared (aliased) nodes counted at every use; stops counting past ``limit``."""
    if depth > 100:
        return limit + 1
    if isinstance(node, dict):
        total = 1
        for value in node.values():
            total += 1 + _count_values(value, limit - total, depth + 1)  # the key, then its value
            if total > limit:
                break
        return total
    if isinstance(node, list):
        total = 1
        for value in node:
            total += _count_values(value, limit - total, depth + 1)
            if total > limit:
                break
        return total
    return 1


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.02"`` -> ``(["optimizer", "lr"], 0.02)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{short_text(text)}: overrides look like dotted.key=value")
    value = _parse_yaml(raw, key) if raw.strip() else None
    return key.split("."), value


def apply_override(tree: dict, keys: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]... = value``, creating mappings on the way; integer keys index lists."""
    node: Any = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(f"{where}: no list item {key} (the list has {len(node)} items)")
            index = int(key)
            if last:
                node[index] = value
            else:
                if isinstance(node[index], str):  # layer shorthand `relu` -> {type: relu}
                    node[index] = {"type": node[index]}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if child is None:  # absent, or `null` in the YAML: the override creates the section
                    child = node[key] = {}
                elif not isinstance(child, (dict, list)):
                    raise ConfigError(f"{where}: is a value, not a section (got {short(child)})")
                node = child
        else:
            raise ConfigError(f"{'.'.join(keys[:depth])}: is a value, not a section (got {short(node)})")


def read_yaml_mapping(path: Path) -> dict:
    """The config file's top-level mapping; every way a file can fail to be one is a ConfigError line."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        with open_regular(path) as handle:  # a FIFO or device planted as a config must not block or flood
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); is it a config file?") from None
    tree = _parse_yaml(text, str(path))
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (got {type(tree).__name__})")
    return tree


#: Fields that hold paths. Written in a config file, a relative path means relative to that file;
#: given as an override on the command line, relative to the current folder (as a shell user means).
PATH_FIELDS = (("data", "source"),)


def _absolute_paths(tree: dict, base: Path) -> None:
    for section, key in PATH_FIELDS:
        node = tree.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), (str, list)):
            node[key] = (
                [_absolute(item, base) for item in node[key]] if isinstance(node[key], list) else _absolute(node[key], base)
            )
    # A user layer's `type: layers/swish.py:Swish` names its file relative to the config, as paths do.
    user.map_references(tree, lambda reference, path: user.absolute_reference(reference, base))


def _absolute(item: Any, base: Path) -> Any:
    """A relative path made absolute against ``base``; ``official`` and what is not a path stay (validation judges them)."""
    if not isinstance(item, str) or not item or "\0" in item or item == OFFICIAL_SOURCE:
        return item
    path = Path(item).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def build_config(tree: dict, overrides: list[str] = (), base_dir: Path | None = None) -> RunConfig:
    """Apply ``overrides`` to the raw mapping ``tree`` and validate it.

    Relative paths in ``tree`` are taken relative to ``base_dir`` (the config file's folder), those
    in overrides relative to the current folder; the resolved config holds absolute paths only.
    """
    if base_dir is not None:
        _absolute_paths(tree, base_dir)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(tree, keys, value)
    _absolute_paths(tree, Path.cwd())
    user.register_references(tree)  # the user's layers join the schema's union before it validates
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([format_error(err, tree) for err in exc.errors()[:20]]) from None
    except RecursionError:
        raise ConfigError("<config>: nested too deeply to be a config") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The config file at ``path`` (and the files its ``base:`` chain names) with ``overrides`` applied last."""
    return build_config(read_config_tree(Path(path)), overrides)


def read_config_tree(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping with its relative paths made absolute against its folder, merged onto
    the file its ``base:`` names (relative to it; chains allowed, cycles refused). Mappings merge key by
    key, lists and values replace; a section that names another kind (``name``, ``type``) replaces the base's."""
    path = path.expanduser().resolve() if path.exists() else path
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(f"{chain[-1]}: base: a cycle of configs ({cycle})")
    tree = read_yaml_mapping(path)
    _absolute_paths(tree, path.parent)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: the path of another config file (got {short(base)})")
    base_path = Path(base).expanduser()
    base_path = base_path if base_path.is_absolute() else path.parent / base_path
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base_path} is not a config file")
    return merge(read_config_tree(base_path, (*chain, path)), tree)


def merge(base: dict, tree: dict) -> dict:
    """``tree`` on top of ``base``: mappings merge key by key, anything else replaces (lists too); a
    mapping whose ``name`` or ``type`` differs from the base's replaces it whole (another kind's keys)."""
    merged = dict(base)
    for key, value in tree.items():
        below = base.get(key)
        other_kind = (
            any(k in value and isinstance(below, dict) and below.get(k) != value[k] for k in ("name", "type"))
            if isinstance(value, dict)
            else False
        )
        merged[key] = merge(below, value) if isinstance(value, dict) and isinstance(below, dict) and not other_kind else value
    return merged


def dump_config(config: RunConfig, folder: Path | None = None) -> str:
    """The resolved config as YAML, every default written out; loading it gives back ``config``.
    For a file in ``folder`` (a run folder's copy of user code), a user layer's ``type`` names it relative
    to the folder, so that the folder's config.yaml still finds it when the folder moves."""
    tree = config.model_dump(mode="json")
    if folder is not None:
        user.map_references(tree, lambda reference, path: _relative_reference(reference, Path(folder)))
    return yaml.safe_dump(_kind_first(tree), sort_keys=False, default_flow_style=None)


def _relative_reference(reference: str, folder: Path) -> str:
    file, _, name = reference.rpartition(":")
    try:
        return f"{Path(file).relative_to(folder.resolve())}:{name}" if user.is_file_reference(reference) else reference
    except ValueError:  # a file outside the folder keeps its absolute path
        return reference


def _kind_first(value: Any) -> Any:
    """Put `name`/`type` first in every mapping, so each layer and section reads as 'what, then how'."""
    if isinstance(value, list):
        return [_kind_first(v) for v in value]
    if isinstance(value, dict):
        head = {k: value[k] for k in ("type", "name") if k in value}
        return head | {k: _kind_first(v) for k, v in value.items() if k not in head}
    return value


#: Keys that may change on --resume; anything else would make config.yaml lie about what ran.
RESUMABLE_KEYS = (
    "training.epochs",
    "training.early_stopping",
    "training.checkpoint_every",
    "output.plots",
    "output.tensorboard",
    "output.histogram_every",
)


def lookup(tree, dotted: str):
    """The value at a dotted path of a config tree (None where there is none)."""
    for key in dotted.split("."):
        if isinstance(tree, dict):
            tree = tree.get(key)
        elif isinstance(tree, list) and key.isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return None
    return tree


def changed_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted paths where two config trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [c for k in keys for c in changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in changed_keys(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]
