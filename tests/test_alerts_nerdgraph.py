"""plan/apply against a fake NerdGraph that validates every request against the schema."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from workerwatch.alerts import MANAGED_MARKER, is_managed
from workerwatch.alerts import nerdgraph as ng
from workerwatch.alerts.cli import alerts_main, dashboards_main
from workerwatch.alerts.load import load_alerts
from workerwatch.output import retry

from tests.nerdgraph.fake import FakeNerdGraph
from tests.nerdgraph.schema import validation_errors

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "definitions"
KEY = "NRAK-TESTSECRET0123456789ABCDEFGHIJ"
ACCOUNT = 1234567
POLICY = "nri-workerwatch: stalled workers"
CONDITION_COUNT = len(load_alerts(DEFINITIONS / "alerts", {})[0].conditions)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(ng, "_sleep", slept.append)
    return slept


@pytest.fixture
def fake(httpserver, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> FakeNerdGraph:
    server = FakeNerdGraph(KEY, ACCOUNT)
    httpserver.expect_request("/graphql", method="POST").respond_with_handler(server.handle)
    monkeypatch.setenv("NEW_RELIC_API_KEY", KEY)
    monkeypatch.delenv("NEW_RELIC_ACCOUNT_ID", raising=False)
    monkeypatch.delenv("WORKERWATCH_DEFINITIONS", raising=False)
    server.endpoint = httpserver.url_for("/graphql")  # type: ignore[attr-defined]
    yield server
    assert server.invalid == [], "a request did not validate against the NerdGraph schema"


def run(capsys: pytest.CaptureFixture[str], fake: FakeNerdGraph, kind: str, *args: str):
    main = alerts_main if kind == "alerts" else dashboards_main
    argv = [
        *args,
        "--account-id",
        str(ACCOUNT),
        "--endpoint",
        fake.endpoint,  # type: ignore[attr-defined]
        "--definitions",
        str(DEFINITIONS),
    ]
    code = main(argv)
    out, err = capsys.readouterr()
    assert KEY not in out and KEY not in err, "the API key was printed"
    return code, out, err


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize("document", ng.DOCUMENTS, ids=lambda d: ng._operation_name(d))
def test_every_document_validates_against_the_nerdgraph_schema(document: str) -> None:
    assert validation_errors(document) == []


def test_the_schema_check_catches_a_field_nerdgraph_does_not_have() -> None:
    # AlertsPolicy has no description (conditions and dashboards do).
    bad = ng.POLICY_CREATE.replace("incidentPreference", "description", 1)
    assert bad != ng.POLICY_CREATE and validation_errors(bad)


def test_the_policy_entity_guid_is_in_the_schema_and_read_back(fake, capsys) -> None:
    # The live API has AlertsPolicy.entityGuid (newrelic-client-go #1401); the dump did not.
    assert (
        validation_errors(
            "query { actor { account(id: 1) { alerts { policiesSearch "
            "{ policies { entityGuid } } } } } }"
        )
        == []
    )
    assert "entityGuid" in ng.POLICIES_SEARCH
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0
    policy = fake.policy_named(POLICY)
    assert f"entity GUID {policy['entityGuid']}" in out


def test_endpoints_by_region() -> None:
    assert ng.ENDPOINTS["us"] == "https://api.newrelic.com/graphql"
    assert ng.ENDPOINTS["eu"] == "https://api.eu.newrelic.com/graphql"


# ----------------------------------------------------------------------------- alerts


def test_first_apply_creates_everything_and_second_apply_sends_no_mutation(fake, capsys) -> None:
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0, out
    assert (
        fake.mutation_fields()
        == ["alertsPolicyCreate"] + ["alertsNrqlConditionStaticCreate"] * CONDITION_COUNT
    )
    policy = fake.policy_named(POLICY)
    assert policy["incidentPreference"] == "PER_CONDITION_AND_TARGET"
    stored = fake.conditions_in(policy["id"])
    assert len(stored) == CONDITION_COUNT
    assert all(is_managed(c["description"]) for c in stored)
    assert f"Plan: {CONDITION_COUNT + 1} to create" in out
    assert "Apply complete" in out

    before = len(fake.mutations)
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0, out
    assert len(fake.mutations) == before, "second apply sent a mutation"
    assert "Nothing to apply." in out
    assert f"{CONDITION_COUNT + 1} unchanged" in out


def test_plan_prints_each_field_and_changes_nothing(fake, capsys) -> None:
    code, out, _ = run(capsys, fake, "alerts", "plan")
    assert code == 0
    assert fake.mutations == []
    assert f"+ create policy {POLICY!r}" in out
    assert 'incidentPreference: "PER_CONDITION_AND_TARGET"' in out
    assert "+ create condition 'Worker stalled'" in out
    assert "terms[CRITICAL].thresholdDuration: 300" in out
    assert 'nrql.query: "SELECT max(workerwatch.worker.stalled) FROM Metric' in out
    assert "expiration.openViolationOnExpiration: true" in out


def test_apply_sends_each_conditions_defined_terms_and_expiration(fake, capsys) -> None:
    """What reaches NerdGraph is what the definitions say (checked against the docs in
    test_alerts_definitions): operator, threshold, duration and occurrences of every term."""
    assert run(capsys, fake, "alerts", "apply")[0] == 0
    stored = {c["name"]: c for c in fake.conditions.values()}
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    assert set(stored) == {c.name for c in doc.conditions}
    for c in doc.conditions:
        sent = stored[c.name]
        fields = ("priority", "operator", "threshold", "thresholdDuration", "thresholdOccurrences")
        assert [tuple(t[f] for f in fields) for t in sent["terms"]] == [
            (p, t.operator, t.threshold, t.duration, t.occurrences) for p, t in c.terms
        ], c.key
        expiration = sent["expiration"]
        if c.expiration is None:
            assert expiration["openViolationOnExpiration"] is False, c.key
        else:
            assert expiration["expirationDuration"] == c.expiration.duration, c.key
            assert expiration["openViolationOnExpiration"] is c.expiration.open_incident
            assert expiration["closeViolationsOnExpiration"] is c.expiration.close_incidents
            assert (
                expiration["ignoreOnExpectedTermination"]
                is c.expiration.ignore_on_expected_termination
            )
    stalled = stored["Worker stalled"]["terms"]
    assert [(t["operator"], t["threshold"]) for t in stalled] == [("ABOVE", 0)]


def test_changed_threshold_updates_exactly_one_condition(fake, capsys) -> None:
    assert run(capsys, fake, "alerts", "apply")[0] == 0
    before = len(fake.mutations)

    code, out, _ = run(capsys, fake, "alerts", "plan", "--set", "stall_minutes=10")
    assert code == 0 and len(fake.mutations) == before
    assert "~ update condition 'Worker stalled'" in out
    assert "terms[CRITICAL].thresholdDuration: 60 -> 600" in out
    assert "Plan: 1 to update" in out

    code, out, _ = run(capsys, fake, "alerts", "apply", "--set", "stall_minutes=10")
    assert code == 0, out
    sent = fake.mutations[before:]
    assert [s.fields for s in sent] == [["alertsNrqlConditionStaticUpdate"]]
    # Only the changed top-level field is sent: an unchanged query must not reset evaluation.
    assert set(sent[0].variables["condition"]) == {"terms"}
    stalled = next(c for c in fake.conditions.values() if c["name"] == "Worker stalled")
    assert stalled["terms"][0]["thresholdDuration"] == 600

    before = len(fake.mutations)
    assert run(capsys, fake, "alerts", "apply", "--set", "stall_minutes=10")[0] == 0
    assert len(fake.mutations) == before


def test_edit_made_in_the_ui_shows_as_drift_and_is_reverted(fake, capsys) -> None:
    assert run(capsys, fake, "alerts", "apply")[0] == 0
    stalled = next(c for c in fake.conditions.values() if c["name"] == "Worker stalled")
    stalled["signal"]["slideBy"] = 30
    stalled["enabled"] = False
    before = len(fake.mutations)
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0
    assert "signal.slideBy: 30 -> (unset)" in out
    assert "enabled: false -> true" in out
    sent = fake.mutations[before:]
    assert len(sent) == 1
    assert sent[0].variables["condition"]["signal"]["slideBy"] is None
    assert stalled["signal"]["slideBy"] is None and stalled["enabled"] is True


def test_unmanaged_condition_with_the_same_name_is_not_touched(fake, capsys) -> None:
    policy_id = fake.add_policy(POLICY, "PER_CONDITION_AND_TARGET")
    mine = fake.add_condition(
        policy_id,
        name="Worker stalled",
        description="made by hand in the UI",
        terms=[
            {
                "priority": "CRITICAL",
                "operator": "ABOVE",
                "threshold": 5.0,
                "thresholdDuration": 600,
                "thresholdOccurrences": "ALL",
            }
        ],
    )
    # One managed condition in the policy makes the policy ours.
    fake.add_condition(policy_id, name="Workers missing", description=MANAGED_MARKER)
    snapshot = dict(fake.conditions[mine])

    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0, out
    assert "! skip condition 'Worker stalled'" in out
    assert "not managed by this tool" in out
    assert fake.conditions[mine] == snapshot
    names = [c["name"] for c in fake.conditions_in(policy_id)]
    assert names.count("Worker stalled") == 1, "created a duplicate next to the unmanaged one"
    for seen in fake.mutations:
        assert seen.variables.get("id") != mine


def test_policy_holding_only_unmanaged_conditions_is_left_alone(fake, capsys) -> None:
    policy_id = fake.add_policy(POLICY)
    fake.add_condition(policy_id, name="Someone else's", description="hand-made")
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0
    assert "! skip policy" in out
    assert fake.mutations == []
    assert fake.policies[policy_id]["incidentPreference"] == "PER_POLICY"


def test_managed_condition_no_longer_defined_is_deleted_unmanaged_one_kept(fake, capsys) -> None:
    assert run(capsys, fake, "alerts", "apply")[0] == 0
    policy_id = fake.policy_named(POLICY)["id"]
    old = fake.add_condition(policy_id, name="Renamed long ago", description=MANAGED_MARKER)
    other = fake.add_condition(policy_id, name="Team condition", description="ours, not yours")
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0
    assert "- delete condition 'Renamed long ago'" in out
    assert "'Team condition'" in out and "left alone" in out
    assert old not in fake.conditions and other in fake.conditions


def test_policy_preference_drift_is_updated(fake, capsys) -> None:
    assert run(capsys, fake, "alerts", "apply")[0] == 0
    fake.policy_named(POLICY)["incidentPreference"] = "PER_POLICY"
    before = len(fake.mutations)
    code, out, _ = run(capsys, fake, "alerts", "apply")
    assert code == 0
    assert 'incidentPreference: "PER_POLICY" -> "PER_CONDITION_AND_TARGET"' in out
    assert [s.fields for s in fake.mutations[before:]] == [["alertsPolicyUpdate"]]


# ----------------------------------------------------------------------------- dashboards


def test_dashboard_first_apply_creates_second_sends_nothing_and_set_updates(fake, capsys) -> None:
    code, out, _ = run(capsys, fake, "dashboards", "apply")
    assert code == 0, out
    assert fake.mutation_fields() == ["dashboardCreate"]
    (stored,) = fake.dashboards.values()
    assert stored["name"] == "nri-workerwatch"
    assert [p["name"] for p in stored["pages"]] == ["Workers", "Queues", "Integration health"]
    assert is_managed(stored["description"])

    code, out, _ = run(capsys, fake, "dashboards", "apply")
    assert code == 0
    assert fake.mutation_fields() == ["dashboardCreate"], "second apply sent a mutation"
    assert "Nothing to apply." in out

    page_guids = [p["guid"] for p in stored["pages"]]
    code, out, _ = run(capsys, fake, "dashboards", "apply", "--set", "backlog_stuck_minutes=30")
    assert code == 0
    assert "rawConfiguration.thresholds[0].value: 900 -> 1800" in out
    assert fake.mutation_fields() == ["dashboardCreate", "dashboardUpdate"]
    assert [p["guid"] for p in stored["pages"]] == page_guids, "page GUIDs must survive"


def test_unmanaged_dashboard_with_the_same_name_is_not_touched(fake, capsys) -> None:
    guid = fake.add_dashboard("nri-workerwatch", description="hand-made copy")
    code, out, _ = run(capsys, fake, "dashboards", "apply")
    assert code == 0
    assert "! skip dashboard 'nri-workerwatch'" in out
    assert fake.mutations == []
    assert fake.dashboards[guid]["description"] == "hand-made copy"


def test_dashboard_typed_errors_fail_the_apply(fake, capsys) -> None:
    fake.dashboard_errors.append({"type": "INVALID_INPUT", "description": "widget 3 is bad"})
    code, _, err = run(capsys, fake, "dashboards", "apply")
    assert code == 1
    assert "INVALID_INPUT: widget 3 is bad" in err
    assert "apply stopped: 0 change(s) made" in err


# ----------------------------------------------------------------------------- errors


def test_top_level_error_with_http_200_stops_apply_and_says_what_was_done(fake, capsys) -> None:
    fake.fail_mutation(
        "alertsNrqlConditionStaticCreate",
        "Validation Error: BAD_USER_INPUT",
        errorClass="BAD_USER_INPUT",
        validationErrors=[{"name": "terms[0].thresholdDuration", "reason": "too long"}],
    )
    code, out, err = run(capsys, fake, "alerts", "apply")
    assert code == 1
    assert "ConditionCreate failed: BAD_USER_INPUT: Validation Error" in err
    assert "terms[0].thresholdDuration: too long" in err
    assert "apply stopped: 1 change(s) made" in err and "created policy" in err
    assert "Apply complete" not in out
    assert len(fake.conditions) == 0


def test_http_401_is_reported_as_a_bad_key(fake, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NEW_RELIC_API_KEY", "NRAK-WRONGKEY")
    code, out, err = run(capsys, fake, "alerts", "plan")
    assert code == 1
    assert "rejected the API key (HTTP 401, BAD_API_KEY)" in err
    assert "NRAK-WRONGKEY" not in out + err


def test_bad_api_key_with_http_200_is_reported_and_an_echoed_key_is_masked(fake, capsys) -> None:
    fake.reply_next(
        200,
        {
            "data": None,
            "errors": [
                {"message": f"Invalid key {KEY}", "extensions": {"error_code": "BAD_API_KEY"}}
            ],
        },
    )
    code, _, err = run(capsys, fake, "alerts", "plan")
    assert code == 1
    assert "BAD_API_KEY" in err


def test_echoed_key_in_any_error_is_masked(fake, capsys) -> None:
    fake.reply_next(200, {"data": None, "errors": [{"message": f"cannot use {KEY} here"}]})
    code, _, err = run(capsys, fake, "alerts", "plan")  # run() asserts the key is absent
    assert code == 1
    assert "cannot use <redacted> here" in err


def test_http_429_is_retried_honouring_retry_after(fake, capsys, sleeps) -> None:
    fake.reply_next(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": "7"})
    fake.reply_next(
        200,
        {"errors": [{"message": "throttled", "extensions": {"errorClass": "TOO_MANY_REQUESTS"}}]},
    )
    code, out, _ = run(capsys, fake, "alerts", "plan")
    assert code == 0, out
    assert sleeps == [7.0, 2.0]  # Retry-After first, then the exponential backoff


def test_persistent_throttling_gives_up_after_bounded_retries(fake, capsys, sleeps) -> None:
    for _ in range(ng.MAX_RETRIES + 1):
        fake.reply_next(429, {}, {"Retry-After": "999"})
    code, _, err = run(capsys, fake, "alerts", "plan", "--timeout", "1000")
    assert code == 1
    assert "throttling" in err and f"gave up after {ng.MAX_RETRIES} retries" in err
    assert sleeps == [retry.MAX_RETRY_AFTER] * ng.MAX_RETRIES
    # Each retry is said on stderr as it happens, not only with --verbose.
    assert err.count("[WARN] PoliciesSearch:") == ng.MAX_RETRIES
    assert fake.seen == []  # every attempt got a canned 429


def test_a_wait_past_the_budget_is_not_taken(fake, capsys, sleeps) -> None:
    fake.reply_next(429, {}, {"Retry-After": "45"})
    code, _, err = run(capsys, fake, "alerts", "plan", "--timeout", "20")
    assert code == 1
    assert sleeps == [], "a 45 s Retry-After does not fit a 20 s budget"
    assert "--timeout budget of 20 s for the whole command ran out (retries made: 0" in err


def test_server_error_on_a_mutation_is_not_retried(fake, capsys, sleeps) -> None:
    # The policy search answers normally; the policy create then meets a 502.
    fake.reply_next(
        200,
        {
            "data": {
                "actor": {
                    "account": {"alerts": {"policiesSearch": {"nextCursor": None, "policies": []}}}
                }
            }
        },
    )
    fake.reply_next(502, "bad gateway")
    code, _, err = run(capsys, fake, "alerts", "apply")
    assert code == 1
    assert "may or may not have been made" in err
    assert sleeps == [], "a mutation that may have been applied must not be sent twice"
    assert fake.seen == [] and fake.policies == {}


def test_missing_api_key_is_a_clear_error(fake, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NEW_RELIC_API_KEY")
    code, _, err = run(capsys, fake, "alerts", "plan")
    assert code == 1
    assert "set NEW_RELIC_API_KEY" in err
    assert fake.seen == []


def test_missing_account_id_is_a_clear_error(capsys, monkeypatch) -> None:
    monkeypatch.setenv("NEW_RELIC_API_KEY", KEY)
    monkeypatch.delenv("NEW_RELIC_ACCOUNT_ID", raising=False)
    code = alerts_main(["plan", "--definitions", str(DEFINITIONS)])
    err = capsys.readouterr().err
    assert code == 1 and "--account-id is required" in err


@pytest.mark.slow  # waits out real timeouts
def test_every_request_has_a_timeout() -> None:
    # A listener that never answers: connect succeeds (backlog), the read must time out.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = ng.NerdGraphClient(
            f"http://127.0.0.1:{port}/graphql", KEY, budget=3, max_retries=0
        )
        with client:
            with pytest.raises(ng.NerdGraphError, match=r"no answer .* within 2 s"):
                client.query(ng.POLICIES_SEARCH, {"accountId": 1})
            with pytest.raises(ng.AmbiguousMutationError):
                client.mutate(ng.CONDITION_DELETE, {"accountId": 1, "id": "1"})
            with pytest.raises(ng.NerdGraphError, match=r"budget of 3 s .* ran out .*retries"):
                client.query(ng.POLICIES_SEARCH, {"accountId": 1})


@pytest.mark.slow  # waits out the whole budget
def test_an_endpoint_that_never_answers_ends_within_the_budget(monkeypatch, capsys) -> None:
    # Accepts every connection and never sends a byte (issue 13: plan stayed busy 4 min 7 s).
    monkeypatch.setenv("NEW_RELIC_API_KEY", KEY)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        started = time.monotonic()
        code = alerts_main(
            [
                "plan",
                "--account-id",
                str(ACCOUNT),
                "--endpoint",
                f"http://127.0.0.1:{port}/graphql",
                "--definitions",
                str(DEFINITIONS),
                "--timeout",
                "6",
            ]
        )
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1
    assert elapsed < 6 + 2, f"took {elapsed:.1f} s with --timeout 6"
    # Two attempts of 2 s with a 1 s then a 2 s wait fit in 6 s; each retry is said.
    assert "[WARN] PoliciesSearch: PoliciesSearch: no answer" in err and "retry 1/3" in err
    final = err.strip().splitlines()[-1]
    assert final.startswith("[ERR]") and "retries" in final, final
    assert "Traceback" not in err


def test_retry_after_parsing() -> None:
    assert retry.retry_after("3") == 3.0
    assert retry.retry_after("-4") == 0.0
    assert retry.retry_after("100000") == retry.MAX_RETRY_AFTER
    assert retry.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry.retry_after("soon") is None
    assert retry.retry_after(None) is None
