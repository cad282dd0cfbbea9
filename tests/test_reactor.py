"""Near-real-time re-describe: a CloudTrail write event re-scans just the scope it touched and
publishes the named resources with the event's attribution."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from cloudinv.catalog.registry import default_registry
from cloudinv.core.codec import decode, encode
from cloudinv.core.kafka import ensure_topics
from cloudinv.core.models import CloudTrailEvent, Principal, ResourceSnapshot
from cloudinv.core.settings import KafkaSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.reactor import ChangeReactor, EventIndex
from cloudinv.runtime.embedded import EmbeddedBroker
from cloudinv.runtime.processes import choose_port
from tests.moto_helpers import MemberAccount


def _event(name: str, account: str, region: str, **fields: object) -> CloudTrailEvent:
    return CloudTrailEvent(
        event_id=f"ev-{random.random()}",
        event_time=datetime.now(UTC),
        event_source="ec2.amazonaws.com",
        service="ec2",
        event_name=name,
        region=region,
        account_id=account,
        principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{account}:user/alice", name="alice"),
        source_ip="198.51.100.7",
        read_only=False,
        **fields,  # type: ignore[arg-type]
    )


def test_index_finds_ids_through_the_declared_expressions() -> None:
    index = EventIndex(default_registry())
    run = _event(
        "RunInstances",
        "111111111111",
        "eu-west-1",
        response_elements={
            "instancesSet": {"items": [{"instanceId": "i-1"}, {"instanceId": "i-2"}]}
        },
    )
    (trigger,) = index.triggers(run)
    assert trigger.spec.cfn_type == "AWS::EC2::Instance"
    assert trigger.ids == {"i-1", "i-2"} and trigger.region == "eu-west-1"
    tags = _event(
        "CreateTags",
        "111111111111",
        "eu-west-1",
        request_parameters={"resourcesSet": {"items": [{"resourceId": "sg-9"}]}},
    )
    assert {t.spec.cfn_type for t in index.triggers(tags)} >= {
        "AWS::EC2::Instance",
        "AWS::EC2::SecurityGroup",
    }
    failed = run.model_copy(update={"error_code": "UnauthorizedOperation"})
    assert index.triggers(failed) == []
    read = run.model_copy(update={"read_only": True})
    assert index.triggers(read) == []


async def test_run_instances_event_publishes_the_instance_with_attribution(
    moto_endpoint: str, broker: str, unique: str
) -> None:
    member = MemberAccount.create(moto_endpoint, 5)
    account = member.account
    ec2 = member.client("ec2", "eu-west-1")
    image = ec2.register_image(Name="img", RootDeviceName="/dev/sda1")["ImageId"]
    existing = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    new = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]

    aws = member.aws(["eu-west-1"])
    prefix = f"r{unique}"
    publisher = KafkaPublisher({"bootstrap_servers": broker}, prefix)
    await publisher.start()
    reactor = ChangeReactor(
        aws,
        publisher,
        {"bootstrap_servers": broker},
        prefix,
        access=member.access(aws),
    )
    event = _event(
        "RunInstances",
        account,
        "eu-west-1",
        response_elements={"instancesSet": {"items": [{"instanceId": new["InstanceId"]}]}},
    )
    try:
        attributed = await reactor.handle([event])
    finally:
        await publisher.stop()
    assert attributed == 1
    assert reactor.stats.rescans == 1

    consumer = AIOKafkaConsumer(
        topic_name(Topic.SNAPSHOTS, prefix),
        bootstrap_servers=broker,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    snapshots: list[ResourceSnapshot] = []
    try:
        async with asyncio.timeout(20):
            while len(snapshots) < 2:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    snapshots += [decode(ResourceSnapshot, r.value) for r in records]
    finally:
        await consumer.stop()
    by_id = {s.resource_id: s for s in snapshots}
    assert set(by_id) == {existing["InstanceId"], new["InstanceId"]}
    attribution = by_id[new["InstanceId"]].attribution
    assert attribution is not None
    assert attribution.event_id == event.event_id
    assert attribution.principal_arn == f"arn:aws:iam::{account}:user/alice"
    assert attribution.source_ip == "198.51.100.7"
    assert by_id[existing["InstanceId"]].attribution is None


async def test_a_stop_is_not_held_up_by_a_broker_that_died(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """The broker dies while the reactor joins its group (as when `cloudinv up` is killed and
    its children get SIGTERM with the broker gone): a stop still ends the run in seconds.
    aiokafka's consumer start and stop wait without limit for a broker that is not there."""
    member = MemberAccount.create(moto_endpoint, 6)
    port = choose_port("127.0.0.1", None, "test broker", "--port")
    broker = EmbeddedBroker(tmp_path, port=port)
    await broker.start()
    kafka = {"bootstrap_servers": broker.bootstrap}
    publisher = KafkaPublisher(kafka, f"s{unique}")
    await publisher.start()
    reactor = ChangeReactor(
        member.aws(["eu-west-1"]),
        publisher,
        kafka,
        f"s{unique}",
        access=member.access(member.aws(["eu-west-1"])),
        group_id=f"g{unique}",
    )
    stop = asyncio.Event()
    running = asyncio.create_task(reactor.run(stop))
    # Kill the broker once the reactor's consumer has begun to join its group (Tansu takes
    # seconds to complete a join): its start then waits for a coordinator that is gone.
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        async with asyncio.timeout(60):
            while True:
                (described,) = await admin.describe_consumer_groups([f"g{unique}"])
                states = {group[2] for group in described.groups}
                if states - {"Empty", "Dead", ""}:
                    break
                await asyncio.sleep(0.05)
    finally:
        await admin.close()
    await broker.stop()
    stop.set()
    try:
        # A bound on a hang (the stop itself takes a few seconds), not a timing figure.
        await asyncio.wait_for(asyncio.shield(running), 60)
    finally:
        running.cancel()
        await publisher.stop(timeout=1)


async def test_events_published_again_into_a_replaced_broker_are_re_described(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """The embedded broker dies and a new one (empty, another cluster id) takes its port; the
    sources publish again what it had not delivered. The running reactor rejoins its group in
    the new broker and must read those events: with ``latest`` offsets it would start after
    them, and the changes they caused would wait for the next scan without who made them."""
    member = MemberAccount.create(moto_endpoint, 7)
    port = choose_port("127.0.0.1", None, "test broker", "--port")
    prefix = f"s{unique}"
    settings = KafkaSettings(topic_prefix=prefix, partitions=2)
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    first = EmbeddedBroker(tmp_path / "first", port=port)
    await first.start()
    kafka = {"bootstrap_servers": first.bootstrap}
    await ensure_topics(settings, first.bootstrap)
    publisher = KafkaPublisher(kafka, prefix)
    await publisher.start()
    aws = member.aws(["eu-west-1"])
    handled: set[str] = set()

    class Recording(ChangeReactor):
        async def handle(self, events: Iterable[CloudTrailEvent]) -> int:
            events = list(events)
            handled.update(e.event_id for e in events)
            return await super().handle(events)

    reactor = Recording(
        aws, publisher, kafka, prefix, access=member.access(aws), group_id=f"g{unique}"
    )
    stop = asyncio.Event()
    running = asyncio.create_task(reactor.run(stop))
    second: EmbeddedBroker | None = None

    async def until(check: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(120):  # a bound on a hang, not a timing figure
                while True:
                    if running.done():
                        running.result()
                    if check():
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"never happened: {what}") from None

    async def publish(bootstrap: str, count: int) -> set[str]:
        # Read-only events: the reactor reads them and has nothing to re-describe (no AWS).
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        ids = set()
        try:
            for _ in range(count):
                event = _event("DescribeInstances", member.account, "eu-west-1")
                event = event.model_copy(update={"read_only": True})
                await producer.send(topic, encode(event), key=event.event_id.encode())
                ids.add(event.event_id)
            await producer.flush()
        finally:
            await producer.stop()
        return ids

    try:
        await until(lambda: bool(reactor.assignment()), "the reactor joined its group")
        # More events in the first log than in the second: the reactor's positions there lie
        # past the new log's end, as after any real restart of a busy broker.
        before = await publish(first.bootstrap, 12)
        await until(lambda: before <= handled, "the reactor read the first events")
        await first.stop()
        second = EmbeddedBroker(tmp_path / "second", port=port)
        await second.start()
        await ensure_topics(settings, second.bootstrap)
        again = await publish(second.bootstrap, 4)
        await until(lambda: again <= handled, "the reactor read what the new broker holds")
        assert reactor.stats.brokers_replaced + reactor.stats.partitions_rewound >= 1
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(running), 60)
        finally:
            running.cancel()
            await publisher.stop(timeout=1)
            if second is not None:
                await second.stop()
