"""Packaging: the wheel's dependencies and extras, the core install working with jax + numpy alone,
lazy submodules, console scripts and the Makefile's install stamp.

The fast core-install test builds the wheel, unpacks it into a fresh venv (``python -m venv``, no
pip, no system site-packages) whose only other distributions are the core dependency closure
computed from the wheel's metadata (linked from this environment, so nothing is downloaded), and runs
the estimators from NumPy there. ``test_pip_install_core_in_fresh_venv`` (slow) does the same with a
real ``pip install`` of the wheel from the package index and measures the install.
"""

import email.parser
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = {"jax", "jaxlib", "numpy"}  # direct core requirements (Python 3.11 markers)


def _install_size_module():
    spec = importlib.util.spec_from_file_location(
        "install_size", ROOT / "benchmarks" / "install_size.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


IS = _install_size_module()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return IS.build_wheel(str(tmp_path_factory.mktemp("dist")))


def _wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
        ep_name = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = z.read(ep_name).decode()
    return names, meta, entry_points


def _canon(name):
    return name.lower().replace("_", "-")


def test_wheel_core_dependencies_extras_scripts_and_files(wheel):
    names, meta, entry_points = _wheel_metadata(wheel)
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = [r for r in reqs if not r.marker or "extra" not in str(r.marker)]
    assert {_canon(r.name) for r in core} == CORE
    assert {
        _canon(r.name) for r in core if r.marker is None or r.marker.evaluate({"extra": ""})
    } == CORE
    extras = set(meta.get_all("Provides-Extra"))
    assert {"rl", "tasks", "tfds", "tpu-aot", "test", "parity", "notebooks"} <= extras

    def extra(name):
        return {
            _canon(r.name): str(r.specifier)
            for r in reqs
            if r.marker
            and r.marker.evaluate({"extra": name})
            and not r.marker.evaluate({"extra": ""})
        }

    assert {
        "flax",
        "optax",
        "orbax-checkpoint",
        "ml-collections",
        "tqdm",
        "tensorboardx",
        "matplotlib",
    } <= set(extra("rl"))
    assert {"safetensors", "sentencepiece", "absl-py", "scipy"} <= set(extra("rl"))
    assert extra("tpu-aot")["libtpu"] == "==0.0.42.*"  # the pin jax 0.10.2's own `tpu` extra uses
    assert "torch" in extra("parity") and "ipywidgets" in extra("test")
    for script in ("passk-train", "passk-eval", "passk-export", "passk-plan"):
        assert f"{script} = " in entry_points
    for needed in ("passk_jax/py.typed", "passk_jax/numpy_api.py", "passk_jax/torch_api.py",
                   "passk_jax/toys/gaussian.py", "passk_jax/recipes/verl.py", "passk_jax/evaluate.py",
                   "passk_jax/configs/maze_tiny.py", "passk_jax/configs/gemma2_2b_math.py",
                   "passk_jax/configs/gemma2_9b_arc.py", "passk_jax/demo.py"):  # fmt: skip
        assert needed in names, needed


def _closure(requirement_names):
    """Distributions of this environment needed by ``requirement_names`` (markers evaluated here)."""
    seen, todo = {}, list(requirement_names)
    while todo:
        req = todo.pop()
        name = _canon(req.name)
        if name in seen:
            continue
        dist = metadata.distribution(name)
        assert req.specifier.contains(dist.version, prereleases=True), (req, dist.version)
        seen[name] = dist
        for r in dist.requires or []:
            r = Requirement(r)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return seen


def _link_distributions(dists, target):
    """Symlinks each distribution's top-level files / packages (from its RECORD) into ``target``."""
    os.makedirs(target)
    for dist in dists.values():
        tops = {pathlib.PurePath(f).parts[0] for f in dist.files or []}
        for top in tops:
            src = pathlib.Path(dist.locate_file(top))
            if top.endswith(".pth") or top == ".." or not src.exists() or top == "__pycache__":
                continue
            dst = pathlib.Path(target, top)
            if not dst.exists():
                dst.symlink_to(src)


def test_core_install_in_a_fresh_venv_runs_the_estimators_from_numpy(wheel, tmp_path):
    _, meta, _ = _wheel_metadata(wheel)
    core_reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core_reqs = [r for r in core_reqs if r.marker is None or r.marker.evaluate({"extra": ""})]
    dists = _closure(core_reqs)
    assert set(dists) == {"jax", "jaxlib", "numpy", "scipy", "ml-dtypes", "opt-einsum"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = pathlib.Path(IS._site_packages(str(venv)))
    with zipfile.ZipFile(wheel) as z:  # a wheel install is an unpack (no compiled parts here)
        z.extractall(site)
    _link_distributions(dists, str(tmp_path / "core"))
    (site / "core_deps.pth").write_text(str(tmp_path / "core") + "\n")
    py = str(venv / "bin" / "python")

    visible = json.loads(IS.run_isolated(py, IS.LIST, str(tmp_path)))
    assert set(visible) == set(dists) | {"passk-jax"}  # nothing from the [rl] extra or this venv
    smoke = json.loads(IS.run_isolated(py, IS.SMOKE, str(tmp_path)))
    assert smoke["unexpected_modules"] == [] and not smoke["flax_imported"]
    assert smoke["pkpo_row0"][:2] == [pytest.approx(2 / 7, abs=1e-4), 0.0]
    # the model stack needs the [rl] extra, and says so by the missing module's name
    code = "import passk_jax\ntry:\n    passk_jax.rl\nexcept ModuleNotFoundError as e:\n    print(e.name)\n"
    missing = IS.run_isolated(py, code, str(tmp_path)).strip()
    assert missing in {"flax", "ml_collections", "optax", "orbax", "tqdm"}, missing
    # torch adapter: importable, and a call explains that torch is missing
    code = (
        "from passk_jax import torch_api as T\n"
        "try:\n    T.grpo_advantages([[1.0, 0.0]])\nexcept ImportError as e:\n    print(e)\n"
    )
    assert "needs torch" in IS.run_isolated(py, code, str(tmp_path))


def test_version_docstring_and_lazy_submodules():
    code = (
        "import sys, json, passk_jax\n"
        "assert 'passk_jax.estimators' not in sys.modules\n"
        "e = passk_jax.estimators\n"
        "a = passk_jax.numpy_api\n"
        "print(json.dumps({'flax': 'flax' in sys.modules, 'version': passk_jax.__version__,\n"
        "  'doc': bool(passk_jax.__doc__), 'dir': 'estimators' in dir(passk_jax),\n"
        "  'value': float(e.pass_at_k(3, 16, 8))}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res == {
        "flax": False,
        "version": metadata.version("passk_jax"),
        "doc": True,
        "dir": True,
        "value": pytest.approx(0.9),
    }
    import passk_jax

    with pytest.raises(AttributeError, match="no attribute"):
        passk_jax.not_a_module  # noqa: B018


def test_console_scripts_installed_and_answer_help():
    bindir = pathlib.Path(sys.executable).parent
    for script, flag in (
        ("passk-eval", "--checkpoint"),
        ("passk-export", "--checkpoint"),
        ("passk-plan", "--config"),
    ):
        path = shutil.which(script, path=str(bindir))
        assert path, f"{script} not installed next to {sys.executable} (reinstall: make install)"
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and flag in out.stdout, out.stderr
    train = shutil.which("passk-train", path=str(bindir))
    out = subprocess.run([train, "--helpfull"], capture_output=True, text=True, timeout=300)
    assert "--workdir" in out.stdout + out.stderr and "--config" in out.stdout + out.stderr, out


def test_makefile_reinstalls_when_pyproject_changes(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv").mkdir()
    # PY=false: any attempt to (re)create the venv or install fails, so the exit code tells.
    ident = subprocess.run(
        ["make", "-s", "-f", "Makefile", "--eval", "print-id: ; @echo $(DEPS_ID)", "print-id"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (tmp_path / ".venv" / ".installed").write_text(ident + "\n")
    up_to_date = subprocess.run(
        ["make", "-s", "install", "PY=false"], cwd=tmp_path, capture_output=True
    )
    assert up_to_date.returncode == 0  # stamp matches: nothing to do
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("\n# a dependency change\n")
    changed = subprocess.run(
        ["make", "-s", "install", "PY=false"], cwd=tmp_path, capture_output=True
    )
    assert changed.returncode != 0  # it tried to reinstall
    assert "rl,test,parity,tasks" in ident


@pytest.mark.slow
def test_pip_install_core_in_fresh_venv(tmp_path):
    """A real ``pip install`` of the wheel (dependencies from the index or pip's cache)."""
    res = IS.measure("", str(tmp_path))
    assert set(res["packages"]) == {
        "jax",
        "jaxlib",
        "numpy",
        "scipy",
        "ml-dtypes",
        "opt-einsum",
        "passk-jax",
    }
    assert res["smoke"]["unexpected_modules"] == [] and not res["smoke"]["flax_imported"]
    assert 100e6 < res["size_bytes"] < 2e9
