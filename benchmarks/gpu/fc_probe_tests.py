"""Probe tests of `first_contact.py --dry-run` (not collected by CI's pytest: the name does not match
test_*.py; the dry run passes this file explicitly). One passes, one fails on purpose and one outlasts the
per-test timeout, so the dry run proves that the tests stage collects every failure instead of stopping at
the first, that a hung test is cut by its timeout, and that `--only-failed` re-runs exactly the failures
(with FC_PROBE=pass-all they pass)."""

from __future__ import annotations

import os
import time

import pytest

# marked gpu: the dry run selects them with the GPU run's own `-m gpu`
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not os.environ.get("FC_PROBE"), reason="a first_contact.py --dry-run probe"),
]


def test_probe_passes() -> None:
    assert sum(range(5)) == 10


def test_probe_fails_on_purpose() -> None:
    assert os.environ.get("FC_PROBE") == "pass-all", (
        "a deliberate failure: the dry run must record it and go on"
    )


def test_probe_outlasts_the_timeout() -> None:
    if os.environ.get("FC_PROBE") != "pass-all":
        time.sleep(float(os.environ.get("FC_PROBE_SLEEP", "0")))
