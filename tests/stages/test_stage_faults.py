"""A stage against a real HTTP server that fails on cue: every item ends answered or rejected with its reason."""

from pipelines.engines import EngineRegistry
from pipelines.stage import account
from pipelines.stages.caption import caption
from tests.servers import fault_server as faults
from tests.servers.fault_server import empty, hang, malformed, ok, status
from tests.stages.fixtures import context, ingest_scenes

fault_server_module, fault_server = faults.fault_server_module, faults.fault_server


def test_caption_through_faults_loses_nothing(fault_server, tmp_path):
    assets = ingest_scenes(tmp_path, scenes=8)
    profile = {"engine": "openai", "model": "fault-model",
               "options": {"base_url": fault_server.url, "max_concurrency": 1, "timeout_s": 1.0, "max_retries": 1,
                           "backoff_base_s": 0.05, "backoff_max_s": 0.1}}
    # One outcome per arriving request (then the echo answer for the rest): transient faults that a
    # retry gets past (a 500, a hang past the timeout, a malformed body), a 429 that pauses the
    # endpoint, a short reply the stage asks again about, and final failures (a 400, an empty answer,
    # 503s beyond the retry allowance).
    fault_server.script(status(500), ok(), status(429, retry_after="1"), ok(), hang(5), ok(), status(400),
                        empty(), malformed(), ok("two words"), ok(), status(503), status(503))
    registry = EngineRegistry({"captioner": profile}, home=tmp_path)
    result = caption(assets, context("caption", tmp_path, registry))

    counts = account(caption, assets, result)  # every asset kept or rejected, never neither
    assert counts.n_in == 8 and counts.n_rejected >= 3
    reasons = {r["reason"] for r in result.rejects.to_pylist()}
    assert reasons <= {"caption.engine_error", "caption.too_short"}
    details = " ".join(r["detail"] for r in result.rejects.to_pylist())
    # a 400 is final at once; an empty answer is final; 503s are final after the allowed retry
    assert "HTTP 400" in details and "empty completion" in details and "HTTP 503" in details and "after 1 retries" in details
    kept = {r["asset_id"] for r in result.out.to_pylist()} - {r["input_id"] for r in result.rejects.to_pylist()}
    assert len(kept) == counts.n_out and all(
        sum(1 for r in result.out.to_pylist() if r["asset_id"] == a) == 2 for a in kept)  # both styles
    assert all(r["text"].startswith("echo 0:") for r in result.out.to_pylist())  # answers, never fault bodies
    statuses = [r.status for r in fault_server.requests]
    assert statuses.count(429) == 1 and statuses.count(400) == 1
    after_429 = next(i for i, r in enumerate(fault_server.requests) if r.status == 429)
    assert fault_server.requests[after_429 + 1].arrived_s - fault_server.requests[after_429].arrived_s >= 0.9  # Retry-After kept
