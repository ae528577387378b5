"""``python -m tunescope``."""

from tunescope.cli import run

run()
