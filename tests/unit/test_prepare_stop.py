"""The preparation's stop rule (pipelines.prepare_data.CropPhase): shards that fail in a row on the store stop
the job; other failures and successes in between do not (the real outage: tests/integration/test_prepare_data.py)."""

from __future__ import annotations

from pipelines.prepare_data import MAX_STORE_FAILURES_IN_A_ROW, CropPhase

UNREACHABLE = {"error": "S3 endpoint unreachable: ... curlCode: 7", "store": "endpoint unreachable"}
DENIED = {"error": "S3 access denied: ...", "store": "access denied"}
BUG = {"error": "IsADirectoryError: ..."}


def ok(name: str) -> dict:
    return {"shard": name, "runtime": {"pid": 1, "node": "n", "start": 0.0, "end": 1.0, "cpu_seconds": 1.0,
                                       "peak_rss_mb": 1.0, "skipped": False}}


def test_store_failures_in_a_row_stop_the_job_and_print_one_line_per_cause(caplog):
    caplog.set_level("WARNING", logger="pipelines.prepare")
    crop = CropPhase({})
    for i in range(MAX_STORE_FAILURES_IN_A_ROW - 1):
        crop._on_result(f"a{i}", dict(UNREACHABLE))
    crop._on_result("ok", ok("ok"))  # a success in between: the store works, start counting again
    crop._on_result("b0", dict(DENIED))
    crop._on_result("bug", dict(BUG))  # not a store failure: resets too
    for i in range(MAX_STORE_FAILURES_IN_A_ROW - 1):
        crop._on_result(f"c{i}", dict(UNREACHABLE))
    assert crop.stopped is None
    crop._on_result("c-last", dict(UNREACHABLE))
    assert crop.stopped.startswith(f"stopped submitting shards: {MAX_STORE_FAILURES_IN_A_ROW} in a row failed on "
                                   "the output or input store (S3 endpoint unreachable")
    assert "re-run the same command" in crop.stopped and "ok" in crop.done
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.prepare"]
    # the first of each run of store failures and every other failure get a line; the rest of a run does not
    assert [ln.split(" failed:")[0] for ln in lines] == ["shard a0", "shard b0", "shard bug", "shard c0"]
