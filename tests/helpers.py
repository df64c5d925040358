"""Constants the tests share (tests/ is on sys.path; the repo root is not, so `import batchgen`
finds the installed package, the way a user's install would)."""

from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent

PRO_DEFAULTS = """
defaults:
  model: wan2.2-pro
  options: {prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}
"""
