"""Command-line entry point: ``python -m passk_jax.main --config experiments/configs/X.py:ARG --workdir DIR``.

Runs (or resumes, from the newest intact checkpoint in DIR) the RL experiment described by the config
file; the logic lives in :func:`passk_jax.rl.train_and_evaluate`. A config that cannot work
(``validate_config.ConfigError``) or a workdir held by another live process
(``checkpoints.WorkdirLocked``) exits with status 2 and a one-paragraph message, before any work.
SIGTERM is turned into a normal exit so that pending checkpoint writes are awaited.
"""

import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from passk_jax import checkpoints, rl, validate_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for metrics, checkpoints and plots")
flags.mark_flags_as_required(["config", "workdir"])


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    signal.signal(signal.SIGTERM, _terminate)
    try:
        rl.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (validate_config.ConfigError, checkpoints.WorkdirLocked) as e:
        print(f"passk_jax: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
