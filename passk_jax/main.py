"""Command-line entry point: ``passk-train --config NAME_OR_FILE[:ARG] --workdir DIR``.

(``python -m passk_jax.main`` is the same command.) ``--config`` takes a shipped config by name
(``maze_tiny``, ``gemma2_2b_math``, ``gemma2_9b_arc``: :mod:`passk_jax.configs`) or a file path, and
after ``:`` its comma-separated arguments; ``--config NAME --help`` prints the config's docstring and
every argument it accepts, and an argument it does not accept is an error (exit status 2).

Runs (or resumes, from the newest intact checkpoint in DIR) the RL experiment described by the
config; the logic lives in :func:`passk_jax.rl.train_and_evaluate`. The resolved config is saved as
``DIR/run_config.json``; a resume with a different config is refused (exit status 2, the differing keys
named) unless ``--force_resume``. A config that cannot work (``validate_config.ConfigError``) or a
workdir held by another live process (``checkpoints.WorkdirLocked``) also exits with status 2 and a
one-paragraph message, before any work. SIGTERM is turned into a normal exit so that pending
checkpoint writes are awaited. The end of a run prints the final pass@k table.
"""

import signal
import sys

if __name__ == "__main__":  # before JAX is imported: see passk_jax.hostmem
    from passk_jax import hostmem

    hostmem.reexec_with_tunables()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from passk_jax import checkpoints, config_lib, rl, validate_config  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "experiment config: a shipped name (" + ", ".join(config_lib.config_names()) + ") or a "
    "file, then :ARG (e.g. maze_tiny:k=4,seed=1); --config NAME --help lists its arguments",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for metrics, checkpoints and plots")
_FORCE = flags.DEFINE_bool(
    "force_resume",
    False,
    "resume although the workdir's saved config differs (the old one is kept as "
    "run_config.replaced-N.json)",
)
flags.mark_flags_as_required(["config", "workdir"])


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _fail(message: str) -> None:
    print(f"passk_jax: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def prepare_argv(argv: list[str]) -> list[str]:
    """Resolves a shipped config name in ``--config`` to its file, prints a config's help for
    ``--config X --help`` (and exits 0), and turns a config that cannot be loaded (unknown
    argument, missing file, bad value) into a one-line error (exit status 2)."""
    out, spec, where = list(argv), None, None
    for i, a in enumerate(out):
        if a.startswith("--config="):
            spec, where = a.split("=", 1)[1], (i, True)
        elif a == "--config" and i + 1 < len(out):
            spec, where = out[i + 1], (i + 1, False)
    wants_help = any(a in ("--help", "-h", "--helpshort", "-?") for a in out[1:])
    if spec is None:
        if wants_help:
            print(
                "passk-train --config NAME_OR_FILE[:ARG] --workdir DIR [--force_resume]\n\n"
                f"shipped configs: {', '.join(config_lib.config_names())}\n"
                "passk-train --config NAME --help prints a config's docstring and arguments.\n"
            )
        return out
    try:
        path, arg = config_lib.config_path(spec)
        if wants_help:
            print(config_lib.describe(spec))
            sys.exit(0)
        config_lib.load_config(spec)  # fails here, with a clear message, not inside flag parsing
    except (FileNotFoundError, ValueError) as e:
        _fail(f"--config {spec}: {e}")
    resolved = path + (f":{arg}" if arg is not None else "")
    i, inline = where
    out[i] = f"--config={resolved}" if inline else resolved
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    signal.signal(signal.SIGTERM, _terminate)
    try:
        rl.train_and_evaluate(_CONFIG.value, _WORKDIR.value, force_resume=_FORCE.value)
    except (validate_config.ConfigError, checkpoints.WorkdirLocked) as e:
        _fail(str(e))


def run(argv: list[str] | None = None) -> None:
    """``passk-train``: :func:`main` under absl, with :func:`prepare_argv` first."""
    app.run(main, argv=prepare_argv(list(sys.argv if argv is None else argv)))


if __name__ == "__main__":
    run()
