"""Attribution as a join: which resources an event names (derived from every registered type),
which event explains which change (the observation window), the versioning planner, one label
per principal, and the store side of the join (SQLite; DynamoDB in test_attribution_dynamodb.py).

No broker here: the end-to-end cases (scan before event, deletions, short-lived resources)
are in test_attribution_e2e.py.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cloudinv.catalog.event_resources import (
    EventResourceIndex,
    ResourceRef,
    event_source_prefix,
    refs_of,
)
from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.models import (
    GLOBAL_REGION,
    Attribution,
    ChangeEvent,
    CloudTrailEvent,
    EventResource,
    Principal,
)
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.sinks.dynamodb_store import DynamoStore
from cloudinv.sinks.events_store import EventsStore
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import AttributionJoin, ChangeQuery, InventoryStore, WriteEvent
from cloudinv.sinks.versioning import Head, StepKind, advance, best_attribution, plan
from cloudinv.streams.changes import change_id
from tests.api_helpers import read_sse, running_api

ACCOUNT = "111111111111"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
REGISTRY = default_registry()
INDEX = EventResourceIndex(REGISTRY)


def event(
    name: str,
    source: str,
    *,
    at: datetime = T0,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    resources: list[EventResource] | None = None,
    region: str = "eu-west-1",
    read_only: bool = False,
    error: str | None = None,
    event_id: str | None = None,
) -> CloudTrailEvent:
    return CloudTrailEvent(
        event_id=event_id or f"{name}-{at.isoformat()}",
        event_time=at,
        event_source=f"{source}.amazonaws.com",
        service=source,
        event_name=name,
        region=region,
        account_id=ACCOUNT,
        principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/alice"),
        read_only=read_only,
        error_code=error,
        request_parameters=request,
        response_elements=response,
        resources=resources or [],
    )


# -- which resources an event names --------------------------------------------------------------


def _source_of(spec: ResourceSpec) -> str:
    return event_source_prefix(spec.service)


def _last_segment(path: str) -> str:
    return path.replace("[]", "").rsplit(".", 1)[-1]


def _field_as_cloudtrail_names_it(spec: ResourceSpec) -> str:
    field = spec.id_field.replace("[]", "").rsplit(".", 1)[-1]
    if field.lower() in ("id", "name", "arn", "identifier"):
        field = spec.cfn_type.rsplit("::", 1)[1] + field[0].upper() + field[1:]
    return field[0].lower() + field[1:]


@pytest.mark.parametrize("spec", REGISTRY.all(), ids=lambda s: s.cfn_type)
def test_every_registered_type_is_found_by_its_id_field(spec: ResourceSpec) -> None:
    """No event-name list: an event of the type's service that carries its identifier field,
    in the request or in the response, names it."""
    if (
        not _last_segment(spec.id_field)
        .lower()
        .endswith(("id", "name", "arn", "identifier", "url"))
    ):
        # A few derived types are identified by a field not named like an identifier (an
        # AppFlow connector's connectorLabel, an IoT RoleAlias): the index does not read those.
        pytest.skip(f"{spec.id_field} is not named like an identifier")
    field = _field_as_cloudtrail_names_it(spec)
    region = GLOBAL_REGION if spec.global_service else "eu-west-1"
    for where in ("request", "response"):
        payload = {"nested": [{field: "x-1"}]}
        ev = event(
            "AnyWriteCall",
            _source_of(spec),
            **{where: payload},  # type: ignore[arg-type]
        )
        assert ResourceRef(spec.cfn_type, ACCOUNT, region, "x-1") in INDEX.refs(ev), where


def test_the_records_resources_and_declared_expressions_count_too() -> None:
    arn = "arn:aws:s3:::logs-bucket"
    ev = event("PutObjectAcl", "s3", resources=[EventResource(arn=arn, type="AWS::S3::Bucket")])
    assert ResourceRef("AWS::S3::Bucket", ACCOUNT, GLOBAL_REGION, arn) in INDEX.refs(ev)
    tags = event("CreateTags", "ec2", request={"resourcesSet": {"items": [{"resourceId": "sg-1"}]}})
    assert ResourceRef("AWS::EC2::SecurityGroup", ACCOUNT, "eu-west-1", "sg-1") in INDEX.refs(tags)


def test_reads_failures_and_unrelated_fields_name_nothing() -> None:
    request = {"snapshotId": "snap-1"}
    assert INDEX.refs(event("DeleteSnapshot", "ec2", request=request, read_only=True)) == []
    assert INDEX.refs(event("DeleteSnapshot", "ec2", request=request, error="Denied")) == []
    # A generic "name" names a bucket only as bucketName (or inside an object called bucket).
    assert INDEX.refs(event("PutBucketAcl", "s3", request={"name": "x"})) == []
    # The demo's short-lived snapshots: created (id in the response) and deleted.
    create = event(
        "CreateSnapshot", "ec2", request={"volumeId": "vol-1"}, response={"snapshotId": "snap-1"}
    )
    assert {r.ref for r in INDEX.refs(create)} >= {
        f"AWS::EC2::Snapshot|{ACCOUNT}|eu-west-1|snap-1",
        f"AWS::EC2::Volume|{ACCOUNT}|eu-west-1|vol-1",
    }


# -- which event explains which change -----------------------------------------------------------


def _attribution(at: datetime, event_id: str = "e") -> Attribution:
    return Attribution(event_id=event_id, event_name="X", event_time=at)


def change(
    *,
    captured: datetime,
    prior_seen: datetime | None,
    kind: str = "modified",
    observed: datetime | None = None,
    attribution: Attribution | None = None,
    after: str | None = "h2",
    key: str = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:snapshot/snap-1",
) -> ChangeEvent:
    deleted = kind == "deleted"
    return ChangeEvent(
        change_id=change_id(key, "h1", None if deleted else after, prior_seen),
        key=key,
        resource_type="AWS::EC2::Snapshot",
        resource_id=key.rsplit("/", 1)[1],
        account_id=ACCOUNT,
        region="eu-west-1",
        change_type=kind,
        configuration=None if deleted else {"v": after},
        before_hash=None if kind == "created" else "h1",
        after_hash=None if deleted else after,
        captured_at=captured,
        detected_at=captured,
        prior_seen_at=prior_seen,
        observed_at=observed,
        attribution=attribution,
    )


def test_the_latest_event_between_the_two_observations_explains_a_change() -> None:
    c = change(captured=T0 + timedelta(seconds=60), prior_seen=T0)
    before = _attribution(T0 - timedelta(seconds=10), "before")
    first = _attribution(T0 + timedelta(seconds=20), "first")
    last = _attribution(T0 + timedelta(seconds=40), "last")
    after = _attribution(T0 + timedelta(seconds=90), "after")
    assert best_attribution(c, [before, first, after]) == first
    assert best_attribution(c, [last, first, before]) == last
    assert best_attribution(c, [before, after]) is None
    # Truncated to the second, an event stamped just before the last observation counts.
    assert best_attribution(c, [_attribution(T0 - timedelta(milliseconds=500))]) is not None
    # Already attributed to the latest: nothing better.
    assert (
        best_attribution(change(captured=c.captured_at, prior_seen=T0, attribution=last), [first])
        is None
    )


def test_a_deletion_found_by_a_scan_takes_events_until_the_scan_ended() -> None:
    started, ended = T0 + timedelta(seconds=60), T0 + timedelta(seconds=75)
    d = change(captured=started, prior_seen=T0, kind="deleted", observed=ended)
    during = _attribution(T0 + timedelta(seconds=70), "delete")
    assert best_attribution(d, [during]) == during


# -- the versioning planner -----------------------------------------------------------------------


def test_the_planner_skips_replays_closes_and_opens() -> None:
    t = 1_000
    created = change(captured=T0, prior_seen=None, kind="created", after="h1")
    step = plan(created, t, None)
    assert step.kind is StepKind.APPLY and step.opens and step.closes is None
    head = advance(created, t, step)
    assert head == Head(created.change_id, "h1", t, None, stored=False)
    assert plan(created, t + 5, head).kind is StepKind.SKIP  # same hash: a replay
    modified = change(captured=T0, prior_seen=T0, after="h2")
    assert plan(modified, t, head).kind is StepKind.SKIP  # not after what is open
    step = plan(modified, t + 10, head)
    assert step.kind is StepKind.APPLY and step.closes == head and step.opens
    head = advance(modified, t + 10, step)
    deleted = change(captured=T0, prior_seen=T0, kind="deleted")
    step = plan(deleted, t + 20, head)
    assert step.kind is StepKind.APPLY and not step.opens
    head = advance(deleted, t + 20, step)
    assert head.valid_to == t + 20
    assert plan(deleted, t + 30, head).kind is StepKind.SKIP  # nothing open
    assert plan(created, t + 15, head).kind is StepKind.SKIP  # older than the deletion
    assert plan(created, t + 25, head).kind is StepKind.APPLY  # re-created
    invalid = created.model_copy(update={"configuration": None})
    assert plan(invalid, t + 25, head).kind is StepKind.INVALID


# -- one label per principal ---------------------------------------------------------------------


def _record(identity: dict[str, Any], name: str = "CreateBucket") -> dict[str, Any]:
    return {
        "eventID": f"id-{name}-{identity.get('type')}",
        "eventTime": "2026-11-01T12:00:00Z",
        "eventSource": "signin.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "recipientAccountId": ACCOUNT,
        "userIdentity": identity,
    }


def test_records_without_an_arn_count_under_the_same_principal() -> None:
    with_arn = normalize_record(
        _record(
            {
                "type": "IAMUser",
                "principalId": "AIDA1",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
                "accountId": ACCOUNT,
                "userName": "alice",
            }
        )
    )
    console = normalize_record(
        _record(
            {"type": "IAMUser", "principalId": "AIDA1", "accountId": ACCOUNT, "userName": "alice"},
            "ConsoleLogin",
        )
    )
    assert console.principal.label == with_arn.principal.label
    assert console.principal.arn == f"arn:aws:iam::{ACCOUNT}:user/alice"
    root = normalize_record(_record({"type": "Root", "principalId": ACCOUNT, "accountId": ACCOUNT}))
    assert root.principal.arn == f"arn:aws:iam::{ACCOUNT}:root"
    session = normalize_record(
        _record(
            {
                "type": "AssumedRole",
                "principalId": "AROA1:deploy-bot",
                "accountId": ACCOUNT,
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "arn": f"arn:aws:iam::{ACCOUNT}:role/Deployer",
                        "userName": "Deployer",
                    }
                },
            }
        )
    )
    assert session.principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/deploy-bot"
    china = normalize_record(
        {
            **_record({"type": "Root", "accountId": ACCOUNT}),
            "awsRegion": "cn-north-1",
        }
    )
    assert china.principal.arn == f"arn:aws-cn:iam::{ACCOUNT}:root"
    # A service has no account of its own: nothing to derive.
    service = normalize_record(_record({"type": "AWSService", "invokedBy": "lambda.amazonaws.com"}))
    assert service.principal.arn is None and service.principal.label == "lambda.amazonaws.com"


# -- the store side of the join ------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "inventory.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def write_event(attribution: Attribution, ident: str = "snap-1") -> WriteEvent:
    refs = (ResourceRef("AWS::EC2::Snapshot", ACCOUNT, "eu-west-1", ident).ref,)
    return WriteEvent(refs=refs, attribution=attribution)


async def check_join(store: InventoryStore) -> None:
    """The store half of every case: event after the change, event before it, a better
    event later, and the figure."""
    assert isinstance(store, AttributionJoin)
    created = change(captured=T0, prior_seen=None, kind="created", after="h1")
    assert await store.put_changes([created]) == 1
    # 1. Scan first: the event arrives later and names the stored change.
    create_event = _attribution(T0 - timedelta(seconds=5), "create")
    (update,) = await store.record_write_events([write_event(create_event)])
    assert update.change_id == created.change_id and update.attribution == create_event
    assert await store.put_changes([update]) == 1  # stored in place
    assert await store.put_changes([update]) == 0  # a replay of the update changes nothing
    (stored,) = (await store.changes(ChangeQuery(limit=10))).items
    assert stored.change_id == created.change_id and stored.attribution == create_event
    versions = await store.history(created.key)
    assert [v.change_id for v in versions] == [created.change_id]

    # 2. Event first: the change finds it when stored.
    delete_event = _attribution(T0 + timedelta(seconds=30), "delete")
    assert await store.record_write_events([write_event(delete_event)]) == []
    deleted = change(
        captured=T0 + timedelta(seconds=40), prior_seen=T0 + timedelta(seconds=20), kind="deleted"
    )
    assert await store.put_changes([deleted]) == 1
    (update,) = await store.attribution_updates([deleted])
    assert update.attribution == delete_event
    assert await store.put_changes([update]) == 1
    # An event about another resource explains nothing here.
    assert await store.record_write_events([write_event(delete_event, "snap-2")]) == []

    page = await store.changes(ChangeQuery(limit=10))
    assert [(c.change_type, c.attribution) for c in page.items] == [
        ("created", create_event),
        ("deleted", delete_event),
    ]
    figure = await store.attribution_figure(T0 - timedelta(minutes=1))
    assert (figure.changes, figure.matched, figure.attributed) == (2, 2, 2)


async def test_sqlite_store_joins_changes_and_events_whichever_comes_first(
    sqlite_store: SqliteStore,
) -> None:
    await check_join(sqlite_store)
    # The live feed tails the change log: each in-place update is logged again, in order.
    logged = await sqlite_store.change_log_after(0, 100)
    assert [(row.change_type, b'"attribution":null' in row.event) for row in logged] == [
        ("created", False),
        ("deleted", False),
    ]
    assert [row.seq for row in logged] == sorted(row.seq for row in logged)
    assert await sqlite_store.change_log_head() == logged[-1].seq


async def test_refs_of_stored_resources_cover_id_name_and_arn() -> None:
    refs = refs_of(
        "AWS::S3::Bucket", ACCOUNT, GLOBAL_REGION, key="arn:aws:s3:::b", resource_id="b", name="b"
    )
    assert refs == [
        f"AWS::S3::Bucket|{ACCOUNT}|global|b",
        f"AWS::S3::Bucket|{ACCOUNT}|global|arn:aws:s3:::b",
    ]


async def test_dynamodb_store_joins_changes_and_events_whichever_comes_first(
    moto_endpoint: str,
) -> None:
    async with DynamoStore(
        f"attr-{random.randrange(10**9)}",
        region="us-east-1",
        endpoint_url=moto_endpoint,
        write_concurrency=1,
    ) as store:
        head = await store.change_log_head()
        await check_join(store)
        # The change log carries each change again once better attributed, in order.
        logged = await store.change_log_after(head, 100)
        assert [row.change_type for row in logged] == ["created", "created", "deleted", "deleted"]
        assert b'"attribution":null' not in logged[-1].event


async def test_status_and_metrics_report_the_attribution_figure(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    created = change(
        captured=now - timedelta(minutes=10), prior_seen=None, kind="created", after="h1"
    )
    await sqlite_store.put_changes([created])
    (update,) = await sqlite_store.record_write_events(
        [write_event(_attribution(now - timedelta(minutes=11), "create"))]
    )
    async with running_api(tmp_path, {"admin": None}, inventory=sqlite_store) as api:
        status, body, _ = await api.get("/v1/status")
        assert status == 200
        assert body["attribution"] == {
            "window_s": 3600.0,
            "changes": 1,
            "matched": 1,
            "attributed": 0,
            "ratio": 0.0,
            "inherited": 0,
        }
        await sqlite_store.put_changes([update])
        _, body, _ = await api.get("/v1/status")
        assert body["attribution"]["ratio"] == 1.0
        _, text, _ = await api.get("/metrics")
        assert "cloudinv_attribution_ratio 1" in text
        assert "cloudinv_changes_matched_last_hour 1" in text


async def test_an_iam_user_with_and_without_arn_is_one_principal_in_the_events_store(
    tmp_path: Path,
) -> None:
    identity = {"type": "IAMUser", "principalId": "AIDA1", "accountId": ACCOUNT}
    records = [
        _record({**identity, "userName": "alice", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice"}),
        _record({**identity, "userName": "alice"}, "ConsoleLogin"),
        _record({**identity, "userName": "alice"}, "CheckMfa"),
    ]
    store = EventsStore(tmp_path / "events.sqlite3")
    await store.open()
    try:
        await store.write_batch([normalize_record(r) for r in records])
        (alice,) = await store.principals()
        assert alice.label == f"arn:aws:iam::{ACCOUNT}:user/alice"
        assert alice.events == 3
    finally:
        await store.close()


async def test_the_live_feed_sends_a_change_again_once_attributed(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    created = change(captured=T0, prior_seen=None, kind="created", after="h1")
    await sqlite_store.put_changes([created])
    async with (
        running_api(tmp_path, {"admin": None}, inventory=sqlite_store) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.base}/v1/changes/stream?last_event_id=0", headers=api.auth()) as resp,
    ):
        first = await read_sse(resp, until=lambda events: len(events) >= 1, timeout=30)
        (update,) = await sqlite_store.record_write_events(
            [write_event(_attribution(T0 - timedelta(seconds=5), "create"))]
        )
        await sqlite_store.put_changes([update])
        both = first + await read_sse(resp, until=lambda events: len(events) >= 1, timeout=30)
    sent = [orjson.loads(e.data) for e in both]
    assert [c["change_id"] for c in sent] == [created.change_id] * 2
    assert [c["attribution"] is not None for c in sent] == [False, True]
    assert int(both[1].id or 0) > int(both[0].id or 0)
