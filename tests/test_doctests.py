"""The docstring examples of the installed ``ceimap.segment`` and ``ceimap.stats`` modules.

They run here, on the modules as ``import ceimap`` finds them, rather than through pytest's
``--doctest-modules`` on the ``segment/`` and ``stats/`` folders, which would import every module a second
time under its folder name (``segment.x`` beside ``ceimap.segment.x``).
"""

import doctest
import importlib
import pkgutil

import pytest

import ceimap


def _modules(packages):
    """``ceimap``'s own modules and every module of ``packages`` (``__main__`` modules, which run when
    imported, left out)."""
    names = ["ceimap"] + [f"ceimap.{m.name}" for m in pkgutil.iter_modules(ceimap.__path__) if not m.ispkg]
    for package_name in packages:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                names.append(info.name)
    return names


def _doctests():
    finder = doctest.DocTestFinder()
    cases = []
    for name in _modules(["ceimap.segment", "ceimap.stats"]):
        for test in finder.find(importlib.import_module(name)):
            if test.examples:
                cases.append(pytest.param(test, id=test.name))
    return cases


@pytest.mark.parametrize("test", _doctests())
def test_docstring_example(test):
    runner = doctest.DocTestRunner(verbose=False)
    report = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
