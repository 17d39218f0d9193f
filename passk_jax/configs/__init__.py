"""Experiment configs shipped with the package: ``maze_tiny`` (CPU), ``gemma2_2b_math``, ``gemma2_9b_arc``.

Each file defines ``get_config(arg)`` and ``ARGS`` (its accepted arguments). Every command takes
``--config NAME[:ARG]`` for these, or ``--config path/to/file.py[:ARG]`` for one's own;
``passk-train --config NAME --help`` prints a config's docstring and arguments.
"""
