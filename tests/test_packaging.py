"""What a wheel of cumel needs: one version, every package of cumel/ in pyproject.toml's list,
the type marker and the data files inside the package (checked installed, where they are read)."""
import sys
from importlib import metadata, resources
from pathlib import Path

import pytest

import cumel
from cumel import cli

REPO = Path(__file__).resolve().parents[1]


def test_one_version_from_the_metadata(capsys):
    assert cumel.__version__ == metadata.version("cumel")
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"cumel {cumel.__version__}"


def test_the_package_holds_its_data_kernels_and_type_marker():
    root = resources.files("cumel")
    assert root.joinpath("py.typed").is_file()
    assert root.joinpath("data").joinpath("demo_speech_mel.npz").is_file()
    kernels = resources.files("cumel.kernels")
    names = {p.name for p in kernels.iterdir()}
    assert {"common.cuh", "nnls.cu", "lstsq.cu", "sgd.cu", "griffinlim.cu", "admm.cu"} <= names


def test_every_package_of_the_tree_is_listed_in_pyproject():
    if sys.version_info < (3, 11):
        pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)")
    import tomllib
    pyproject = REPO / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a checkout of the repository (no pyproject.toml)")
    config = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cumel").rglob("__init__.py")}
    tree.add("cumel.kernels")                                 # from kernels/, by package-dir
    assert tree - listed == set(), f"add these to [tool.setuptools] packages: {sorted(tree - listed)}"
    assert listed - tree == set(), f"listed but not in the tree: {sorted(listed - tree)}"
    assert config["package-dir"] == {"cumel.kernels": "kernels"}


def _public_callables():
    import inspect
    for name in cumel.__all__:
        obj = getattr(cumel, name)
        if not inspect.isclass(obj):
            yield name, obj
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") and attr not in ("__init__", "__call__"):
                continue
            if isinstance(value, property):
                value = value.fget
            elif isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value):
                yield f"{name}.{attr}", value


def test_the_public_api_is_annotated():
    import inspect
    bare = []
    for name, fn in _public_callables():
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
        missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append("return")
        if missing:
            bare.append(f"{name}: {', '.join(missing)}")
    assert bare == [], bare
