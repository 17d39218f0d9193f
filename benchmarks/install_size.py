"""Size and package count of the core install (``pip install passk_jax``, no extras).

Builds the wheel from this checkout, installs it into a fresh virtual environment with pip (the
dependencies come from the package index or pip's cache), runs the estimators from NumPy there, and
prints the packages the install added and their size on disk (the venv's site-packages, less what a
bare venv already holds: pip and setuptools)::

    .venv/bin/python benchmarks/install_size.py            # a table
    .venv/bin/python benchmarks/install_size.py --json     # machine-readable
    .venv/bin/python benchmarks/install_size.py --extras rl   # the same for passk_jax[rl]

Needs network access to the package index the first time (about 150 MB of wheels for jax, jaxlib,
numpy and scipy); later runs reuse pip's cache.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Run inside the fresh venv: the estimators from NumPy, and proof that nothing beyond the core came in.
SMOKE = r"""
import importlib.util, json, sys
import numpy as np
import passk_jax
from passk_jax import numpy_api as P
r = np.array([[1, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]], np.float32)
w = P.pkpo_rewards(r, 4)
w[0, 0] = w[0, 0]  # writable
a = P.compute_advantages("passk", r, k=4)
est = P.maxg_at_k(r, 4)
assert abs(float(P.pass_at_k(3, 16, 8)) - 0.9) < 1e-6
assert abs(float(est[0]) - (1 - 15 / 70)) < 1e-6, est
assert abs(float(passk_jax.estimators.pass_at_k(2, 8, 4)) - (1 - 15 / 70)) < 1e-6
absent = [m for m in ("flax", "optax", "orbax", "torch", "matplotlib", "ml_collections")
          if importlib.util.find_spec(m) is not None]
print(json.dumps({"version": passk_jax.__version__, "pkpo_row0": w[0].round(4).tolist(),
                  "unexpected_modules": absent, "flax_imported": "flax" in sys.modules}))
"""

LIST = r"""
import importlib.metadata as m, json
print(json.dumps(sorted({d.metadata["Name"].lower().replace("_", "-") for d in m.distributions()})))
"""


def _du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def _site_packages(venv: str) -> str:
    return glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))[0]


def run_isolated(python: str, code: str, cwd: str) -> str:
    """Runs ``code`` with ``python -I`` (no cwd / user site on sys.path) in ``cwd``; returns stdout."""
    out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{out.stderr}")
    return out.stdout


def build_wheel(out_dir: str, python: str = sys.executable) -> str:
    """Builds this checkout's wheel (no dependencies, no build isolation) into ``out_dir``.

    The build runs on a copy of the package sources, so setuptools' ``build/`` and ``*.egg-info``
    directories never appear in the checkout.
    """
    src = os.path.join(out_dir, "src")
    shutil.copytree(
        ROOT / "passk_jax", os.path.join(src, "passk_jax"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )  # fmt: skip
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out_dir,
            src,
        ],
        check=True,
    )
    (wheel,) = glob.glob(os.path.join(out_dir, "passk_jax-*.whl"))
    return wheel


def measure(extras: str = "", keep: str | None = None) -> dict:
    """Fresh venv + ``pip install wheel[extras]``; returns packages, sizes, the smoke test's output."""
    tmp = keep or tempfile.mkdtemp(prefix="passk_install_")
    wheel = build_wheel(os.path.join(tmp, "dist"))
    venv = os.path.join(tmp, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    site = _site_packages(venv)
    base_pkgs = set(json.loads(run_isolated(py, LIST, tmp)))
    base_bytes = _du(site)
    t0 = time.time()
    target = wheel + (f"[{extras}]" if extras else "")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", target], check=True
    )
    seconds = time.time() - t0
    added = sorted(set(json.loads(run_isolated(py, LIST, tmp))) - base_pkgs)
    smoke = run_isolated(py, SMOKE, tmp)
    return {
        "extras": extras,
        "packages": added,
        "num_packages": len(added),
        "num_packages_without_passk_jax": len([p for p in added if p != "passk-jax"]),
        "size_bytes": _du(site) - base_bytes,
        "size_mb": round((_du(site) - base_bytes) / 1e6, 1),
        "install_seconds": round(seconds, 1),
        "python": sys.version.split()[0],
        "smoke": json.loads(smoke),
        "venv": venv,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="e.g. 'rl' (default: the core install)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", default=None, help="work directory to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    res = measure(args.extras, args.keep)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    name = "passk_jax" + (f"[{args.extras}]" if args.extras else "")
    print(
        f"{name}: {res['num_packages']} packages, {res['size_mb']} MB on disk (Python {res['python']})"
    )
    print("  " + ", ".join(res["packages"]))
    print(f"  install took {res['install_seconds']} s; estimators from NumPy ran: {res['smoke']}")


if __name__ == "__main__":
    main()
