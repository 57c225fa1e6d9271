"""A pytest plugin for first_contact.py: one JSON line per test outcome, flushed as it happens.

Loaded with `-p fc_reportlog` (benchmarks/gpu on PYTHONPATH) and `FC_REPORTLOG=<path>`. Under pytest-xdist
the controller receives every worker's reports, so one file holds the whole run. Written line by line (not
at session end like --junitxml) so a run killed at its deadline still says which tests passed, failed or
never ran, and why they failed.
"""

from __future__ import annotations

import json
import os

import pytest

MAX_MESSAGE = 3000  # characters of a failure's traceback kept per test (the log has the rest)


def _outcome(report: pytest.TestReport) -> str | None:
    """passed | failed | skipped | error | xfailed | xpassed, or None for a phase that decides nothing."""
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else ("xfailed" if report.skipped else None)
    if report.when not in ("setup", "teardown"):  # "call"; or "???": xdist's report of a crashed worker
        return report.outcome
    if report.failed:  # setup or teardown raised: an error, not a test failure
        return "error"
    if report.when == "setup" and report.skipped:
        return "skipped"
    return None


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])  # (file, line, "Skipped: reason")
    text = getattr(report, "longreprtext", "") or ""
    return text[-MAX_MESSAGE:]


class ReportLog:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8")  # closed at session finish
        self.seen_collection = False

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = _outcome(report)
        if outcome is None:
            return
        self.write({"nodeid": report.nodeid, "outcome": outcome, "when": report.when,
                    "duration_s": round(report.duration, 3),
                    "message": _message(report) if outcome != "passed" else ""})  # fmt: skip

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write({"nodeid": report.nodeid, "outcome": "error", "when": "collect", "duration_s": 0.0,
                        "message": str(report.longrepr)[-MAX_MESSAGE:]})  # fmt: skip

    def collected(self, nodeids: list[str]) -> None:
        if not self.seen_collection:  # every xdist worker reports the same collection: write it once
            self.seen_collection = True
            self.write({"collected": len(nodeids), "nodeids": nodeids[:20000]})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not session.config.pluginmanager.hasplugin("dsession"):  # without xdist the controller collects
            self.collected([item.nodeid for item in session.items])

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write({"session_finished": True, "exitstatus": int(exitstatus)})
        self.file.close()


class XdistCollection:
    """Under pytest-xdist the workers collect; the controller hears of it through this xdist hook."""

    def __init__(self, log: ReportLog) -> None:
        self.log = log

    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self.log.collected(list(ids))


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("FC_REPORTLOG")
    # xdist workers report through the controller: only the controller (no workerinput) writes
    if path and not hasattr(config, "workerinput"):
        log = ReportLog(path)
        config.pluginmanager.register(log, "fc_reportlog_writer")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(XdistCollection(log), "fc_reportlog_xdist")
