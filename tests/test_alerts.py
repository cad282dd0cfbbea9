"""Alerts end to end: a real Faust worker on the real broker (Tansu), ChangeEvents on the changes
topic, the built-in rule pack, real aiohttp webhook receivers on 127.0.0.1, the API over the
alerts store, and the alerts topic.

- Opening port 22 to the world raises an alert within 5 s of the change event, visible in
  the API (list, single alert, SSE stream, never to a token of another account), on the
  alerts topic, and delivered to a generic and a Slack-format webhook; closing the port
  resolves it.
- A malformed rule file next to good ones is rejected (file, rule id, problem) and the other
  rules keep working.
- A webhook receiver that is down receives every alert once it is back, each notification
  exactly once per (rule, resource, opening). The outage here is 6 s with a retry schedule of
  0.2 s doubling to 1 s, so the test is short; the default schedule (2 s doubling to 60 s,
  ``alerts.retry_*``) is the one for real outages of a minute or more, delivering at most a
  minute after the receiver is back.
- A worker restarted on the same data directory replays the whole changes topic (a new
  consumer group) and raises nothing twice: alert state lives in the alerts store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr

from cloudinv.core.codec import encode
from cloudinv.core.models import ChangeEvent, ResourceSnapshot
from cloudinv.core.settings import AlertSettings, WebhookSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.sinks.alerts_store import (
    AlertFilters,
    AlertNotification,
    AlertsBackend,
    AlertsStore,
    BaselineScope,
    Observation,
    OutboxWait,
    Severity,
)
from cloudinv.sinks.dynamodb_alerts_store import DynamoAlertsStore
from cloudinv.sinks.store import ResourceVersion
from cloudinv.streams import alerts
from cloudinv.streams.alert_delivery import RetryPolicy, SnsDestination
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.changes import ChangeDetector
from tests.api_helpers import read_sse, running_api
from tests.test_rules_pack import perm, record, sg

ACCOUNT = "210987654321"
OTHER = "123456789012"
REGION = "us-east-1"
SSH_RULE = "ec2-sg-ssh-open-to-world"
FAST_RETRY = RetryPolicy(first_delay_s=0.2, max_delay_s=1.0)
OUTAGE_S = 6.0


# -- a webhook receiver --------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 recording every POSTed body; it can be stopped and
    started again on the same port (a receiver that is down refuses connections)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(orjson.loads(await request.read()))
            self.headers.append(dict(request.headers))
            self.arrived.set()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, check: Any, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not check(self.bodies):
                self.arrived.clear()
                await self.arrived.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the pipeline ---------------------------------------------------------------------------------


class SecurityGroups:
    """Security groups changing state, as the change detector reports them."""

    def __init__(self) -> None:
        self.detector = ChangeDetector()
        self.clock = datetime.now(UTC) - timedelta(minutes=5)

    def key(self, n: int) -> str:
        return f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-{n:017x}"

    def change(self, n: int, configuration: dict[str, Any]) -> ChangeEvent:
        self.clock += timedelta(seconds=1)
        change = self.detector.observe(
            ResourceSnapshot.build(
                account_id=ACCOUNT,
                region=REGION,
                resource_type="AWS::EC2::SecurityGroup",
                resource_id=f"sg-{n:017x}",
                arn=self.key(n),
                name=f"web-{n}",
                configuration=configuration,
                scan_id="scan",
                captured_at=self.clock,
            )
        )
        assert change is not None
        return change

    def open_22(self, n: int) -> ChangeEvent:
        return self.change(n, sg(perm(443), perm(22)))

    def close_22(self, n: int) -> ChangeEvent:
        return self.change(n, sg(perm(443)))


async def send_changes(broker: str, prefix: str, changes: list[ChangeEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for change in changes:
            await producer.send_and_wait(
                topic_name(Topic.CHANGES, prefix), value=encode(change), key=change.key.encode()
            )
    finally:
        await producer.stop()


async def send_events(broker: str, prefix: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for raw in records:
            event = normalize_record(raw)
            await producer.send_and_wait(
                topic_name(Topic.CLOUDTRAIL, prefix),
                value=encode(event),
                key=event.principal.label.encode(),
            )
    finally:
        await producer.stop()


@asynccontextmanager
async def worker(
    broker: str, data_dir: Path, app_id: str, prefix: str, settings: AlertSettings
) -> AsyncIterator[alerts.AlertStage]:
    config = StreamConfig(
        bootstrap=broker, data_dir=data_dir, app_id=app_id, topic_prefix=prefix, partitions=2
    )
    app = create_app(config)
    stage = alerts.bind(app, config, settings=settings, retry=FAST_RETRY)
    await app.start()
    try:
        async with asyncio.timeout(60):
            while True:
                if app.consumer.assignment():
                    break
                await asyncio.sleep(0.1)
        yield stage
    finally:
        await app.stop()


async def stored_notifications(data_dir: Path) -> list[AlertNotification]:
    async with AlertsStore.in_data_dir(data_dir) as store:
        return await store.notifications_after(0, 10_000)


async def wait_until(check: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


def notifications_of(bodies: list[dict[str, Any]], rule: str | None = None) -> list[dict[str, Any]]:
    return [b for b in bodies if rule is None or b["alert"]["rule_id"] == rule]


BAD_RULES = """
rules:
  - id: team-bad-condition
    title: A broken rule
    severity: high
    kind: state
    resource_type: AWS::EC2::SecurityGroup
    condition: IpPermissions[?FromPort ==
  - id: team-sg-named-web-1
    title: A security group called web-1
    severity: info
    kind: state
    resource_type: AWS::EC2::SecurityGroup
    condition: GroupName == 'web-1' || Description == 'web tier'
"""


# -- tests ----------------------------------------------------------------------------------------


async def test_port_22_opened_raises_an_alert_in_seconds_everywhere(
    broker: str, unique: str, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "team.yaml").write_text(BAD_RULES)
    (rules_dir / "broken.yaml").write_text("rules: [unclosed\n")
    generic, slack = Receiver(), Receiver()
    await generic.start()
    await slack.start()
    settings = AlertSettings(
        rules_dir=rules_dir,
        webhooks=[
            WebhookSettings(url=SecretStr(generic.url)),
            WebhookSettings(url=SecretStr(slack.url), format="slack"),
        ],
    )
    prefix = f"al{unique}"
    groups = SecurityGroups()
    try:
        async with worker(broker, tmp_path, f"test-alerts-{unique}", prefix, settings) as stage:
            # The malformed rules are rejected with their file, id and problem...
            problems = {(Path(p.file).name, p.rule_id) for p in stage.rules.problems}
            assert problems == {("team.yaml", "team-bad-condition"), ("broken.yaml", None)}
            bad = next(p for p in stage.rules.problems if p.rule_id == "team-bad-condition")
            assert "invalid JMESPath" in bad.problem and str(bad).startswith(str(rules_dir))
            # ... and the good rule of the same file runs, with the whole pack.
            assert stage.rules.get("team-sg-named-web-1") is not None
            assert len(stage.rules.active) >= 26

            opened = groups.open_22(1)
            started = time.monotonic()
            await send_changes(broker, prefix, [opened])
            await generic.wait_for(lambda b: notifications_of(b, SSH_RULE), timeout=10)
            elapsed = time.monotonic() - started
            print(f"alert delivered {elapsed:.2f}s after the change event was sent")
            assert elapsed < 5.0, f"the alert took {elapsed:.2f}s"

            (ssh,) = notifications_of(generic.bodies, SSH_RULE)
            assert ssh["type"] == "alert.opened"
            alert = ssh["alert"]
            assert alert["key"] == groups.key(1)
            assert alert["account_id"] == ACCOUNT and alert["severity"] == "high"
            assert alert["opening"] == 1 and alert["opened_by"] == opened.change_id
            assert alert["detail"]["matched"][0]["FromPort"] == 22
            headers = generic.headers[generic.bodies.index(ssh)]
            assert headers["Idempotency-Key"] == ssh["id"] == f"{alert['alert_id']}:opened"
            expected = {SSH_RULE, "ec2-sg-ingress-opened-to-world", "team-sg-named-web-1"}
            await generic.wait_for(lambda b: expected <= {x["alert"]["rule_id"] for x in b})
            fired = {b["alert"]["rule_id"] for b in generic.bodies}

            await slack.wait_for(lambda b: len(b) >= len(generic.bodies))
            message = next(b for b in slack.bodies if "SSH" in b["text"])
            assert message["text"].startswith("[HIGH] Security group allows SSH")
            assert message["blocks"][0]["type"] == "header"
            assert any(f["text"].endswith(SSH_RULE + "`") for f in message["blocks"][1]["fields"])

            # The API: the list, the single alert, and a token of another account.
            async with running_api(tmp_path, {"admin": None, "other": [OTHER]}) as api:
                status, page, _ = await api.get(f"/v1/alerts?rule={SSH_RULE}&status=open")
                assert status == 200 and [a["key"] for a in page["items"]] == [groups.key(1)]
                status, one, _ = await api.get(f"/v1/alerts/{alert['alert_id']}")
                assert status == 200 and one["rule_id"] == SSH_RULE
                status, page, _ = await api.get("/v1/alerts", "other")
                assert status == 200 and page["items"] == []
                status, page, _ = await api.get(f"/v1/alerts?account={ACCOUNT}", "other")
                assert status == 200 and page["items"] == []
                status, _, _ = await api.get(f"/v1/alerts/{alert['alert_id']}", "other")
                assert status == 404
                status, page, _ = await api.get("/v1/alerts?severity=urgent")
                assert status == 400

                # The stream from the start, then live: the resolution when 22 closes.
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(
                        api.base + "/v1/alerts/stream",
                        headers={**api.auth(), "Last-Event-ID": "0"},
                    ) as resp,
                ):
                    assert resp.status == 200
                    backlog = await read_sse(resp, until=lambda ev: len(ev) >= len(fired))
                    ids = [int(e.id or 0) for e in backlog]
                    assert ids == sorted(ids) and len(set(ids)) == len(ids)
                    await send_changes(broker, prefix, [groups.close_22(1)])
                    live = await read_sse(
                        resp,
                        until=lambda ev: any(
                            orjson.loads(e.data)["kind"] == "resolved"
                            and orjson.loads(e.data)["alert"]["rule_id"] == SSH_RULE
                            for e in ev
                        ),
                    )
                    assert all(int(e.id or 0) > ids[-1] for e in live)

            await generic.wait_for(
                lambda b: any(x["type"] == "alert.resolved" for x in notifications_of(b, SSH_RULE))
            )
            resolved = [x for x in notifications_of(generic.bodies, SSH_RULE)]
            assert [x["type"] for x in resolved] == ["alert.opened", "alert.resolved"]
            assert resolved[1]["alert"]["resolved_at"] is not None

            # Event rules through the CloudTrail topic: logging stopped, then started again.
            trail = {"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"}
            stop = record("StopLogging", "cloudtrail.amazonaws.com", params=trail).record
            start = record("StartLogging", "cloudtrail.amazonaws.com", params=trail).record
            start["eventTime"] = "2026-11-01T12:05:00Z"
            await send_events(broker, prefix, [stop, start])
            logging_rule = "cloudtrail-logging-stopped"
            await generic.wait_for(
                lambda b: (
                    [x["type"] for x in notifications_of(b, logging_rule)]
                    == ["alert.opened", "alert.resolved"]
                )
            )
            opened_trail = notifications_of(generic.bodies, logging_rule)[0]["alert"]
            assert opened_trail["key"] == trail["name"] and opened_trail["severity"] == "critical"
            assert opened_trail["detail"]["principal"]["name"] == "alice"

        # Every notification went to the alerts topic too, keyed by rule and resource.
        on_topic = await read_topic(broker, topic_name(Topic.ALERTS, prefix), len(generic.bodies))
        assert {n["notification_id"] for n in on_topic} == {b["id"] for b in generic.bodies}
    finally:
        await generic.stop()
        await slack.stop()


async def read_topic(broker: str, name: str, count: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found += [orjson.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return found


async def test_a_receiver_down_gets_every_alert_exactly_once_when_back(
    broker: str, unique: str, tmp_path: Path
) -> None:
    receiver = Receiver()  # not started: connections are refused
    settings = AlertSettings(webhooks=[WebhookSettings(url=SecretStr(receiver.url))])
    prefix = f"ao{unique}"
    groups = SecurityGroups()
    try:
        async with worker(broker, tmp_path, f"test-outage-{unique}", prefix, settings) as stage:
            down_at = time.monotonic()
            # Three groups open 22; the first closes it and opens it again (a second opening).
            await send_changes(
                broker,
                prefix,
                [groups.open_22(1), groups.open_22(2), groups.open_22(3)],
            )
            await send_changes(broker, prefix, [groups.close_22(1)])
            await send_changes(broker, prefix, [groups.open_22(1)])

            async def recorded() -> bool:
                return stage.stats.changes >= 5 and stage.stats.notifications > 0

            await wait_until(recorded)
            # The pipeline went on while the receiver was down: everything is stored...
            stored = await stored_notifications(tmp_path)
            ssh = [
                (n.kind, n.alert.key, n.alert.opening)
                for n in stored
                if n.alert.rule_id == SSH_RULE
            ]
            assert sorted(ssh) == sorted(
                [
                    ("opened", groups.key(1), 1),
                    ("opened", groups.key(2), 1),
                    ("opened", groups.key(3), 1),
                    ("resolved", groups.key(1), 1),
                    ("opened", groups.key(1), 2),
                ]
            )
            # ... and the alerts topic got them all at once, unaffected by the webhook.
            webhook = next(n for n in stage.dispatcher.names if n.startswith("webhook:"))

            async def topic_done() -> bool:
                return stage.dispatcher.stats["topic"].delivered >= len(stored)

            await wait_until(topic_done)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            assert receiver.bodies == []
            assert stage.dispatcher.stats[webhook].failures >= 3

            await receiver.start()
            back_at = time.monotonic()
            await receiver.wait_for(lambda b: len(b) >= len(stored), timeout=20)
            caught_up = time.monotonic() - back_at
            await asyncio.sleep(2.0)  # time for any duplicate to arrive

            ids = Counter(b["id"] for b in receiver.bodies)
            assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
            assert set(ids) == {n.notification_id for n in stored}
            per_opening = Counter(
                (b["alert"]["rule_id"], b["alert"]["key"], b["alert"]["opening"], b["type"])
                for b in receiver.bodies
            )
            assert set(per_opening.values()) == {1}
            # In order, as queued.
            assert [b["seq"] for b in receiver.bodies] == sorted(n.seq for n in stored)
            assert caught_up < 1.0 + 3.0, f"caught up {caught_up:.1f}s after the receiver came back"
    finally:
        await receiver.stop()


async def test_a_restarted_worker_replaying_the_topic_raises_nothing_twice(
    broker: str, unique: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    await receiver.start()
    settings = AlertSettings(webhooks=[WebhookSettings(url=SecretStr(receiver.url))])
    prefix = f"ar{unique}"
    groups = SecurityGroups()
    try:
        async with worker(broker, tmp_path, f"test-restart-a-{unique}", prefix, settings):
            await send_changes(broker, prefix, [groups.open_22(7)])
            await receiver.wait_for(lambda b: notifications_of(b, SSH_RULE))
        before = len(await stored_notifications(tmp_path))

        # A new consumer group reads the changes topic from the start: a full replay.
        async with worker(broker, tmp_path, f"test-restart-b-{unique}", prefix, settings) as stage:

            async def replayed() -> bool:
                return stage.stats.changes >= 1

            await wait_until(replayed)
            await asyncio.sleep(1.0)
            assert len(await stored_notifications(tmp_path)) == before
            assert stage.stats.notifications == 0

            await send_changes(broker, prefix, [groups.close_22(7)])
            await receiver.wait_for(
                lambda b: (
                    [x["type"] for x in notifications_of(b, SSH_RULE)]
                    == ["alert.opened", "alert.resolved"]
                )
            )
        assert Counter(b["id"] for b in receiver.bodies).most_common(1)[0][1] == 1
    finally:
        await receiver.stop()


def test_the_worker_app_binds_the_alert_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudinv.streams.worker import build_worker_app

    monkeypatch.setenv("CLOUDINV_ALERTS__WEBHOOKS", '[{"url": "http://127.0.0.1:9/hook"}]')
    monkeypatch.chdir(tmp_path)
    app = build_worker_app(StreamConfig(bootstrap="127.0.0.1:9", data_dir=tmp_path))
    names = {agent.name for agent in app.agents.values()}
    assert {"evaluate_changes", "evaluate_events"} <= {n.rsplit(".", 1)[-1] for n in names}


async def test_sns_destination_publishes_to_the_topic(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    import boto3

    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name=REGION)
    topic_arn = sns.create_topic(Name=f"alerts-{unique}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{unique}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    groups = SecurityGroups()
    change = groups.open_22(1)
    async with AlertsStore.in_data_dir(tmp_path) as store:
        (notification,) = await store.apply(
            [
                Observation(
                    rule_id=SSH_RULE,
                    title="Security group allows SSH (port 22) from the internet",
                    severity="high",
                    kind="state",
                    key=change.key,
                    account_id=ACCOUNT,
                    region=REGION,
                    opens=True,
                    holds=True,
                    at=change.captured_at,
                    cause=change.change_id,
                    resource_type=change.resource_type,
                )
            ]
        )
    destination = SnsDestination(topic_arn, endpoint_url=moto_endpoint)
    await destination.start()
    try:
        await destination.deliver(notification)
    finally:
        await destination.stop()
    messages = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=queue_url, WaitTimeSeconds=2, MaxNumberOfMessages=10
    )
    (message,) = messages["Messages"]
    envelope = orjson.loads(message["Body"])
    assert envelope["Subject"].startswith("[HIGH] Security group allows SSH")
    body = orjson.loads(envelope["Message"])
    assert body["id"] == notification.notification_id and body["type"] == "alert.opened"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "high"


# -- the store and the dispatcher without Kafka ---------------------------------------------------


@pytest.fixture(params=["sqlite", "dynamodb"])
def alerts_backend(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> Callable[[], AlertsBackend]:
    """Makes the alerts store under test: SQLite in tmp_path, or DynamoDB on the suite's moto
    server with a table prefix of the test's own."""
    if request.param == "sqlite":
        return lambda: AlertsStore.in_data_dir(tmp_path)
    endpoint = request.getfixturevalue("moto_endpoint")
    return lambda: DynamoAlertsStore(f"alerts-{unique}", endpoint_url=endpoint, write_concurrency=1)


def observation(key: str, at: datetime, cause: str, *, fires: bool) -> Observation:
    return Observation(
        rule_id=SSH_RULE,
        title="SSH open",
        severity="high",
        kind="state",
        key=key,
        account_id=ACCOUNT,
        region=REGION,
        opens=fires,
        holds=fires,
        at=at,
        cause=cause,
    )


async def test_the_store_opens_once_resolves_and_ignores_replays(
    alerts_backend: Callable[[], AlertsBackend],
) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    key = "arn:aws:ec2:us-east-1:210987654321:security-group/sg-1"
    async with alerts_backend() as store:
        first = await store.apply([observation(key, t, "c1", fires=True)], ["a", "b"])
        assert [(n.kind, n.alert.opening) for n in first] == [("opened", 1)]
        # Still firing: no new alert, one more occurrence.
        assert await store.apply([observation(key, t + timedelta(1), "c2", fires=True)]) == []
        (alert,) = (await store.alerts()).items
        assert alert.occurrences == 2 and alert.status == "open"
        # Cleared, then the opening change replayed (at-least-once): nothing reopens.
        cleared = await store.apply([observation(key, t + timedelta(2), "c3", fires=False)])
        assert [n.kind for n in cleared] == ["resolved"]
        replayed = [
            observation(key, t, "c1", fires=True),
            observation(key, t + timedelta(2), "c3", fires=False),
        ]
        assert await store.apply(replayed) == []
        # A later opening is the second one.
        again = await store.apply([observation(key, t + timedelta(3), "c4", fires=True)], ["a"])
        assert [(n.kind, n.alert.opening) for n in again] == [("opened", 2)]
        counts = await store.outbox_counts()
        assert counts == {("a", "pending"): 2, ("b", "pending"): 1}
        assert [n.seq for n in await store.notifications_after(0)] == [1, 2, 3]
        assert await store.head() == 3
        assert [n.seq for n in await store.notifications_after(2)] == [3]
        # Filters and pages, newest first.
        page = await store.alerts(AlertFilters(status="resolved"), limit=1)
        assert [(a.opening, a.status) for a in page.items] == [(1, "resolved")]
        (opened,) = await store.open_alerts()
        assert opened.opening == 2
        first_page = await store.alerts(limit=1)
        assert first_page.items == [opened] and first_page.next_cursor is not None
        rest = await store.alerts(limit=5, cursor=first_page.next_cursor)
        assert [a.opening for a in rest.items] == [1] and rest.next_cursor is None
        assert await store.alert(opened.alert_id) == opened
        assert (await store.alerts(AlertFilters(account_ids=("000000000000",)))).items == []


async def test_a_severity_change_seen_by_two_workers_resolves_the_old_alert_once(
    alerts_backend: Callable[[], AlertsBackend],
) -> None:
    """A group's alert goes from low to critical when an instance starts using it. The
    worker of the instance's change and the worker of the group's own next change both see
    critical: the low alert is resolved once and one critical alert stays open. (Each worker
    asked the store for the open severity before applying, so the second one resolved the
    first one's critical alert and opened another.)"""
    t = datetime(2026, 11, 1, tzinfo=UTC)
    key = "arn:aws:ec2:us-east-1:210987654321:security-group/sg-1"

    def seen(cause: str, at: datetime, severity: Severity) -> list[Observation]:
        opens = dataclasses.replace(observation(key, at, cause, fires=True), severity=severity)
        change = dataclasses.replace(
            opens,
            opens=False,
            holds=False,
            cause=f"{cause}#severity",
            unless_severity=severity,
        )
        return [change, opens]

    async with alerts_backend() as store:
        first = await store.apply(seen("c1", t, "low"))
        assert [(n.kind, n.alert.severity) for n in first] == [("opened", "low")]
        one = await store.apply(seen("c2", t + timedelta(seconds=1), "critical"))
        assert [(n.kind, n.alert.severity) for n in one] == [
            ("resolved", "low"),
            ("opened", "critical"),
        ]
        other = await store.apply(seen("c3", t + timedelta(seconds=1), "critical"))
        assert other == []
        (opened,) = await store.open_alerts()
        assert (opened.severity, opened.opened_by, opened.occurrences) == ("critical", "c2", 2)
        resolved = (await store.alerts(AlertFilters(status="resolved"))).items
        assert [(a.severity, a.resolved_by) for a in resolved] == [("low", "c2#severity")]
        # Back to low: the critical alert is resolved and a low one opens.
        back = await store.apply(seen("c4", t + timedelta(seconds=2), "low"))
        assert [(n.kind, n.alert.severity) for n in back] == [
            ("resolved", "critical"),
            ("opened", "low"),
        ]


async def test_the_outbox_leases_backs_off_and_keeps_refusals(
    alerts_backend: Callable[[], AlertsBackend],
) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    answers = [500, 400, 200]  # a failure, a refusal for good, then success
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.headers["Idempotency-Key"])
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    from cloudinv.streams.alert_delivery import Dispatcher, WebhookDestination

    destination = WebhookDestination(f"http://127.0.0.1:{port}/hook")
    try:
        async with alerts_backend() as store:
            keys = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-{i}" for i in (1, 2)]
            made = await store.apply(
                [observation(k, t, f"c-{k}", fires=True) for k in keys], [destination.name]
            )
            # A lease keeps a second dispatcher off the row being delivered.
            leased = await store.claim(destination.name, 30)
            assert leased is not None and not isinstance(leased, OutboxWait)
            assert isinstance(await store.claim(destination.name, 30), OutboxWait)
            await store.retry_later(leased.id, "test", datetime.now(UTC))

            dispatcher = Dispatcher(store, [destination], FAST_RETRY, idle_poll_s=0.1)
            await dispatcher.start()
            try:

                async def delivered() -> bool:
                    return dispatcher.stats[destination.name].delivered >= 1

                await wait_until(delivered, timeout=10)
            finally:
                await dispatcher.stop()
            # First notification: 500 (retried), then 400 (kept as dead); the second: 200.
            assert hits == [made[0].notification_id] * 2 + [made[1].notification_id]
            counts = await store.outbox_counts()
            assert counts == {(destination.name, "dead"): 1, (destination.name, "delivered"): 1}
    finally:
        await runner.cleanup()


async def test_baselines_pin_replace_and_narrow(
    alerts_backend: Callable[[], AlertsBackend],
) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)

    def version(n: int, account: str, region: str = REGION) -> ResourceVersion:
        return ResourceVersion(
            key=f"arn:aws:ec2:{region}:{account}:security-group/sg-{n}",
            resource_type="AWS::EC2::SecurityGroup",
            resource_id=f"sg-{n}",
            account_id=account,
            region=region,
            configuration={"GroupId": f"sg-{n}"},
            config_hash=f"h{n}",
            valid_from=t,
            change_id=f"c{n}",
        )

    other = "123456789012"
    async with alerts_backend() as store:
        scope = BaselineScope(account_id=ACCOUNT)
        await store.pin(scope, [version(1, ACCOUNT), version(2, ACCOUNT)], t)
        await store.pin(BaselineScope(account_id=other), [version(3, other)], t)
        # Pinning the scope again replaces its baselines and its pin, not the other's.
        again = await store.pin(scope, [version(2, ACCOUNT)], t + timedelta(1))
        assert again.count == 1
        assert [p.account_id for p in await store.pins()] == [other, ACCOUNT]
        mine = await store.baselines(account_ids=[ACCOUNT])
        assert [(b.key.rsplit("/", 1)[1], b.config_hash) for b in mine] == [("sg-2", "h2")]
        assert len(await store.baselines()) == 2
        assert await store.baselines(resource_type="AWS::S3::Bucket") == []
        assert await store.baselines(account_ids=[]) == []
        with pytest.raises(ValueError, match="outside the pinned scope"):
            await store.pin(scope, [version(4, other)], t)
