"""Command-line entry point: ``python -m passk_jax.main --config experiments/configs/X.py:ARG --workdir DIR``.

Runs (or resumes, from the latest checkpoint in DIR) the RL experiment described by the config file;
the logic lives in :func:`passk_jax.rl.train_and_evaluate`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from passk_jax import rl

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for metrics, checkpoints and plots")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    rl.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
