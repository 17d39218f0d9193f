"""Test-session set-up: 8 simulated CPU devices (must happen before jax is imported anywhere)."""

import os

flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("PASSK_QUICK", "1")
