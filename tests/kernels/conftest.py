"""Puts tests/kernels on sys.path, so every kernel test (and the per-backend helper modules) imports the one
set of helpers, kernel_testutil.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
