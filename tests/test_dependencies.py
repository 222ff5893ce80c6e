"""The package imports only what it declares: a module-level import of an undeclared distribution (click,
which Typer 0.29 stopped pulling in) breaks the README's first command on a fresh install, while a test
environment that happens to hold it stays green. `.ci/run` also installs the package alone in a fresh
virtual environment; this test finds the same class of mistake in the fast loop."""

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "cifar_scratch"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, optional extras' distributions) of the installed project, normalised."""
    runtime, optional = set(), set()
    for requirement in requires("cifar-scratch") or []:
        name, extras = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement).groups()
        # dask[distributed]: the extra brings the distribution of the same name
        names = {_normal(name), *(_normal(extra) for extra in (extras or "").split(",") if extra.strip())}
        (optional if "extra ==" in requirement else runtime).update(names)
    return runtime, optional


def _imports(path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level) for every absolute import in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], module_level))
            visit(child, inside)

    visit(tree, True)
    return found


def test_every_third_party_import_is_a_declared_distribution():
    runtime, optional = _declared()
    distributions = packages_distributions()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, module_level in _imports(path):
            if module in sys.stdlib_module_names or module == "cifar_scratch":
                continue
            owners = {_normal(d) for d in distributions.get(module, [])}
            where = f"{path.relative_to(REPO)}: import {module}"
            if owners & runtime:
                continue
            if owners & optional and not module_level:
                continue  # an optional extra, imported by the feature that needs it
            kind = "an optional extra's module imported at module level" if owners & optional else "not a declared dependency"
            problems.append(f"{where} ({kind}; distributions: {sorted(owners) or 'none installed'})")
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_undeclared_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import click\nimport numpy\n\ndef f():\n    import torch\n")
    assert _imports(source) == [("click", True), ("numpy", True), ("torch", False)]


def test_evaluate_and_predict_load_weights_without_the_training_loop():
    import subprocess
    import sys

    probe = (
        "import sys, cifar_scratch.inference.evaluate, cifar_scratch.inference.predict; "
        "print(sorted(m for m in sys.modules if m in ('cifar_scratch.training.trainer', 'cifar_scratch.training.run')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter():
    """An import cycle shows only when its module is imported first: each module, alone, in its own interpreter."""
    import concurrent.futures
    import subprocess
    import sys

    modules = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if path.name != "__main__.py"
    )

    def first(module):
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO)
        return module, result.stderr.strip().splitlines()[-1:] if result.returncode else []

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        failures = {module: error for module, error in pool.map(first, modules) if error}
    assert not failures, failures
