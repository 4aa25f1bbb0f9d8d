"""stream_health_job: observations of `devices` the UI plots, and a check that fails with
a clear message when the broker cannot be read (never "lag 0, passed")."""

from __future__ import annotations

import dagster as dg
import pytest

from antenna_platform.definitions import defs
from antenna_platform.stream.engine import StreamEngine, StreamOptions
from tests.conftest import free_port
from tests.integration.test_stream import make_payloads, produce

pytestmark = pytest.mark.integration


def observe(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    result = defs.resolve_job_def("stream_health_job").execute_in_process(instance=instance)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def observations(instance: dg.DagsterInstance) -> list:
    return instance.fetch_observations(dg.AssetKey("devices"), limit=10, ascending=True).records


def test_lag_end_offsets_and_rates_are_observed_after_stream_activity(make_platform):
    settings = make_platform(partitions=2, ANTENNA_WATERMARK_SECONDS="86400")
    with dg.instance_for_test() as instance:
        assert observe(instance).passed
        first = make_payloads(3_000, seed=5, bad_ratio=0.0)
        produce(settings, first)
        stats = StreamEngine(settings, StreamOptions(stop_when_idle_s=3)).run()
        assert stats.records == len(first)
        assert observe(instance).passed
        waiting = make_payloads(1_234, seed=6, bad_ratio=0.0)
        produce(settings, waiting)  # nobody consumes these
        observe(instance)
        recs = observations(instance)
    assert len(recs) == 3
    meta = [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in recs]
    assert [m["end_offsets_total"] for m in meta] == [0, 3_000, 4_234]
    assert [m["committed_total"] for m in meta] == [0, 3_000, 3_000]
    assert [m["consumer_lag"] for m in meta] == [0, 0, 1_234]
    assert "produced_per_s" not in meta[0]  # no earlier reading to compare with
    expected_rate = 3_000 / (recs[1].timestamp - recs[0].timestamp)
    assert meta[1]["produced_per_s"] == pytest.approx(expected_rate, rel=0.05)
    assert meta[1]["consumed_per_s"] == pytest.approx(expected_rate, rel=0.05)
    assert meta[2]["consumed_per_s"] == 0


def test_unreachable_broker_or_unknown_topic_fails_with_a_clear_message(make_platform, monkeypatch):
    settings = make_platform(partitions=1)
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("ANTENNA_TOPIC", "no_such_topic_here")
        unknown = observe(instance)
        monkeypatch.setenv("ANTENNA_TOPIC", settings.topic)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
        down = observe(instance)
        assert observations(instance) == []  # nothing made up
    for evaluation in (unknown, down):
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.description.startswith("lag unknown: KAFKA_BOOTSTRAP_SERVERS:")
    assert "does not know topic 'no_such_topic_here'" in unknown.description
    assert "cannot be reached" in down.description
