"""Imported by the scorer processes' fork server: builds math-verify's parsers once, so that every
scorer process forked from it starts warm (a cold first check can take seconds on a busy machine,
which would count against that completion's deadline). Never raises."""

try:
    from passk_jax.tasks.math_task import math_equal

    math_equal("\\frac{1}{2}", "\\sqrt{4}/4", None)
    math_equal("x^{2}", "x \\cdot x", None)
except Exception:  # noqa: BLE001 -- warming up is best effort (math-verify may be absent)
    pass
