"""A pytest plugin that writes each test's outcome the moment it is known, one JSON line each, to the
file named by OCHRE_TEST_ROWS: the GPU session's kernel-test step saves them as rows while pytest
runs, so a run cut short by its time limit keeps every result it reached.

    OCHRE_TEST_ROWS=out.jsonl python -m pytest -p ochre.bench.test_rows tests/kernels
"""

from __future__ import annotations

import json
import os


def outcome_row(report) -> dict | None:
    """{"test", "outcome", ["error"]} for a test's final report (its call, or a setup that did not
    pass), else None."""
    if report.when != "call" and not (report.when == "setup" and not report.passed):
        return None
    row = {"test": report.nodeid, "outcome": report.outcome}
    if report.failed:                                 # pytest's "E   ..." lines hold the error itself
        lines = str(report.longrepr).strip().splitlines() or [""]
        row["error"] = next((ln[1:].strip() for ln in lines if ln.startswith("E ")), lines[-1])[:300]
    return row


def pytest_runtest_logreport(report) -> None:
    row = outcome_row(report)
    path = os.environ.get("OCHRE_TEST_ROWS")
    if row and path:
        with open(path, "a") as f:                    # one short append per test: a line is whole or absent
            f.write(json.dumps(row) + "\n")
