"""The CloudTrail tailer (moto S3 → SQS → real broker) and the backfill (local files, S3 by
date range, and the real ``cloudinv cloudtrail backfill`` command)."""

from __future__ import annotations

import asyncio
import gzip
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from cloudinv.core.codec import decode
from cloudinv.core.models import CloudTrailEvent
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.ack import CommitWatch
from cloudinv.producers.cloudtrail.backfill import (
    RESUME_FILE,
    ResumeFile,
    backfill_local,
    list_local_logs,
)
from cloudinv.producers.cloudtrail.backfill_s3 import backfill_s3
from cloudinv.producers.cloudtrail.layout import day_prefixes
from cloudinv.producers.cloudtrail.logfile import (
    LogFileDecoder,
    RejectedFileError,
    RejectionLog,
    read_rejections,
)
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher, PublishError
from cloudinv.producers.cloudtrail.tailer import (
    CloudTrailTailer,
    InlineRecords,
    S3Object,
    Skip,
    TailerConfig,
    TailerError,
    Unrecognized,
    classify_message,
    tail,
)
from tests.cli_helpers import run_cli
from tests.cloudtrail_helpers import (
    ACCOUNT,
    CommittingGroup,
    MotoTrail,
    commit_offsets,
    consume,
    create_topics,
    fixture_records,
    log_bytes,
    log_key,
)

# --- classifying messages ------------------------------------------------------------------


def _s3_notification(key: str, event: str = "ObjectCreated:Put", bucket: str = "b") -> bytes:
    return orjson.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": event,
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}},
                }
            ]
        }
    )


def test_classify_s3_notification_url_decodes_the_key() -> None:
    key = "AWSLogs/o-abcdefghij/111100000000/CloudTrail/us-east-1/2017/06/01/a b:c+d.json.gz"
    work = classify_message(_s3_notification(quote_plus(key, safe="/")))
    assert work == [S3Object("b", key)]


def test_classify_skips_test_event_digest_and_removals() -> None:
    test_event = orjson.dumps(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2024-01-01T00:00:00Z",
            "Bucket": "b",
        }
    )
    assert classify_message(test_event) == [Skip("s3:TestEvent")]
    digest = (
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2017/06/01/x_CloudTrail-Digest_y.json.gz"
    )
    assert classify_message(_s3_notification(digest)) == [Skip("digest file")]
    removed = classify_message(_s3_notification(log_key(), event="ObjectRemoved:Delete"))
    assert isinstance(removed[0], Skip)


def test_classify_sns_wrapped_and_cloudtrail_sns() -> None:
    inner = _s3_notification(log_key()).decode()
    sns = orjson.dumps({"Type": "Notification", "MessageId": "m", "Message": inner})
    assert classify_message(sns) == [S3Object("b", log_key())]
    ct_sns = orjson.dumps({"s3Bucket": "tb", "s3ObjectKey": [log_key(1), log_key(2)]})
    assert classify_message(ct_sns) == [S3Object("tb", log_key(1)), S3Object("tb", log_key(2))]


def test_classify_eventbridge_and_garbage() -> None:
    record = fixture_records()[0]
    envelope = orjson.dumps(
        {"id": "e1", "detail-type": "AWS API Call via CloudTrail", "detail": record}
    )
    work = classify_message(envelope)
    assert isinstance(work[0], InlineRecords)
    assert work[0].records[0]["eventID"] == record["eventID"]
    assert isinstance(classify_message(b"not json")[0], Unrecognized)
    assert isinstance(classify_message(b"[1]")[0], Unrecognized)
    assert isinstance(classify_message(b'{"hello": 1}')[0], Unrecognized)
    state = orjson.dumps({"detail-type": "EC2 State Change", "detail": {"state": "running"}})
    assert isinstance(classify_message(state)[0], Unrecognized)


# --- decoding files ------------------------------------------------------------------------


def _decode(data: bytes, *, gz_name: bool, chunk: int = 7) -> bytes:
    decoder = LogFileDecoder("src", expect_gzip=gz_name)
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
    return decoder.finish()


def test_decoder_gzip_plain_and_multimember() -> None:
    body = b'{"Records": []}'
    assert _decode(gzip.compress(body), gz_name=True) == body
    assert _decode(body, gz_name=False) == body
    assert _decode(gzip.compress(body), gz_name=False) == body  # gzip by content
    assert _decode(gzip.compress(b'{"Rec') + gzip.compress(b'ords": []}'), gz_name=True) == body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"this is not gzip at all", "no gzip header"),
        (gzip.compress(b'{"Records": []}' * 50, mtime=0)[:-30], "truncated"),
        (b"\x1f\x8b\x08\x00garbage-garbage-garbage", "not valid gzip"),
        (b"", "empty"),
    ],
)
def test_decoder_rejects_bad_gzip(data: bytes, reason: str) -> None:
    with pytest.raises(RejectedFileError, match=reason):
        _decode(data, gz_name=True)


# --- the tailer, end to end ----------------------------------------------------------------


async def test_tailer_moto_s3_sqs_to_broker_with_bad_inputs(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    records = fixture_records()
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    prefix = f"t{unique}"
    await create_topics(broker, prefix)

    good_key = log_key(1)
    await trail.put(good_key, log_bytes(records))
    # A plain .json log under a key that S3 URL-encodes in the notification.
    odd_key = f"AWSLogs/o-abcdefghij/{ACCOUNT}/CloudTrail/eu-west-1/2017/06/01/odd name:1.json"
    extra = [{**records[0], "eventID": "extra-1", "awsRegion": "eu-west-1"}]
    await trail.put(odd_key, log_bytes(extra, compress=False))
    await trail.put(log_key(2), b"definitely not gzip")
    await trail.put(log_key(3), gzip.compress(log_bytes(records, compress=False)[:-100]))
    await trail.put(log_key(4), gzip.compress(b"{}"))
    digest = (
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2017/06/01/"
        f"{ACCOUNT}_CloudTrail-Digest_us-east-1_t_us-east-1_20170601T220000Z.json.gz"
    )
    await trail.put(digest, gzip.compress(b'{"digestStartTime": "x"}'))
    # A file with one malformed record among good ones: the good ones go through.
    mixed = [{**records[1], "eventID": "mixed-1"}, {"eventName": "NoId"}]
    await trail.put(log_key(5), log_bytes(mixed))
    # EventBridge delivers one event straight to the queue; junk goes there too.
    eb_record = {**records[2], "eventID": "eventbridge-1"}
    await trail.send(
        orjson.dumps(
            {"id": "eb", "detail-type": "AWS API Call via CloudTrail", "detail": eb_record}
        )
    )
    await trail.send("not json at all")
    # A notification for an object that does not exist (deleted since).
    await trail.send(_s3_notification(log_key(99), bucket=trail.bucket))

    stats = await tail(
        trail.queue_url,
        kafka_client_kwargs={"bootstrap_servers": broker},
        topic_prefix=prefix,
        consumer_group=None,  # broker acknowledgement: end to end is tested below
        data_dir=tmp_path,
        endpoint_url=moto_endpoint,
        region="us-east-1",
        until_idle=True,
        wait_time_s=1,
    )

    expected_ids = {r["eventID"] for r in records} | {"extra-1", "mixed-1", "eventbridge-1"}
    messages = await consume(broker, topic_name(Topic.CLOUDTRAIL, prefix), len(expected_ids))
    events = [decode(CloudTrailEvent, m.value) for m in messages]
    assert sorted(e.event_id for e in events) == sorted(expected_ids)
    partitioner = DefaultPartitioner()
    for message, event in zip(messages, events, strict=True):
        assert message.key == event.principal.label.encode()
        # Batches are built per partition exactly as aiokafka's own send() would route them.
        assert message.partition == partitioner(message.key, [0, 1], [0, 1])
    by_id = {e.event_id: e for e in events}
    assert by_id[records[0]["eventID"]].source_file == f"s3://{trail.bucket}/{good_key}"
    assert by_id["extra-1"].source_file == f"s3://{trail.bucket}/{odd_key}"
    assert not any(b"sessionToken" in m.value for m in messages)

    # Every message was deleted, bad ones included: nothing loops.
    assert await asyncio.to_thread(trail.messages_left) == 0
    assert stats.deleted == stats.messages
    assert stats.events == len(expected_ids)
    assert stats.skipped >= 2  # the s3:TestEvent and the digest file
    assert stats.rejected_files == 5  # bad gzip, truncated, not a log, junk message, missing
    assert stats.rejected_records == 1

    rejected = {r.source: r.reason for r in await read_rejections(tmp_path)}
    uri = f"s3://{trail.bucket}/"
    assert "not valid gzip" in rejected[uri + log_key(2)]
    assert "not valid JSON" in rejected[uri + log_key(3)]
    assert "not a CloudTrail log" in rejected[uri + log_key(4)]
    assert "NoSuchKey" in rejected[uri + log_key(99)]
    assert "record 1" in rejected[uri + log_key(5)]
    assert any(s.startswith("sqs:") and "not JSON" in r for s, r in rejected.items())
    assert not any("Digest" in s for s in rejected)


class _FailingPublisher:
    async def publish(self, messages: Any) -> dict[int, int]:
        raise PublishError("broker down")


async def test_messages_are_deleted_only_once_the_worker_group_committed(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """End-to-end acknowledgement: while the group commits nothing, every message stays in
    the queue (its visibility extended past the 2 s timeout); once it commits, they go."""
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    records = fixture_records()
    for n in range(6):
        await trail.put(log_key(n), log_bytes(records[n * 10 : n * 10 + 10]))
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    config = TailerConfig(
        queue_url=trail.queue_url,
        region="us-east-1",
        endpoint_url=moto_endpoint,
        wait_time_s=1,
        visibility_timeout_s=2,
    )
    group = CommittingGroup(broker, topic, f"g{unique}")
    group.paused.set()
    stop = asyncio.Event()
    async with (
        CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher,
        CommitWatch({"bootstrap_servers": broker}, topic, f"g{unique}") as ack,
        group,
    ):
        tailer = CloudTrailTailer(config, publisher, RejectionLog(tmp_path), ack=ack)
        running = asyncio.create_task(tailer.run(stop))
        deadline = asyncio.get_running_loop().time() + 30
        while tailer.stats.events < 60 or len(group.messages) < 60:
            assert asyncio.get_running_loop().time() < deadline, tailer.stats
            await asyncio.sleep(0.1)
        # Published and read by the group, not committed: nothing deleted, even after the
        # visibility timeout would have run out twice.
        while tailer.stats.extended < 12:
            assert asyncio.get_running_loop().time() < deadline, tailer.stats
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(trail.messages_in_flight) == 6
        assert tailer.stats.deleted == 1  # the s3:TestEvent, which led to no event
        group.paused.clear()
        while tailer.stats.deleted < 7:
            assert asyncio.get_running_loop().time() < deadline, (
                tailer.stats,
                ack._committed,
                ack.last_error,
                ack.waiting,
            )
            await asyncio.sleep(0.1)
        stop.set()
        stats = await running
    assert await asyncio.to_thread(trail.messages_left) == 0
    assert (stats.events, stats.replayed, stats.messages) == (60, 0, 7)


async def test_a_broker_loss_before_the_commit_replays_the_message(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """The watch reports AckLost when the group's committed offset goes back (what a
    restarted broker or a recreated group looks like); the message comes back at once and
    its events are published again."""
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    prefix = f"t{unique}"
    await create_topics(broker, prefix, partitions=1)
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    # The group has committed offset 5 (short of the events to come, at offsets 0-7) ...
    await commit_offsets(broker, topic, f"g{unique}", {0: 5})
    records = fixture_records()[:8]
    await trail.put(log_key(1), log_bytes(records))
    config = TailerConfig(
        queue_url=trail.queue_url, region="us-east-1", endpoint_url=moto_endpoint, wait_time_s=1
    )
    stop = asyncio.Event()
    async with (
        CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher,
        CommitWatch({"bootstrap_servers": broker}, topic, f"g{unique}") as ack,
    ):
        tailer = CloudTrailTailer(config, publisher, RejectionLog(tmp_path), ack=ack)
        running = asyncio.create_task(tailer.run(stop))
        deadline = asyncio.get_running_loop().time() + 30
        while tailer.stats.events < 8 or not ack.waiting:
            assert asyncio.get_running_loop().time() < deadline, tailer.stats
            await asyncio.sleep(0.05)
        # ... and is now back at 0 (what a new group on a restarted broker looks like).
        await commit_offsets(broker, topic, f"g{unique}", {0: 0})
        while tailer.stats.replayed < 1:
            assert asyncio.get_running_loop().time() < deadline, tailer.stats
            await asyncio.sleep(0.05)
        async with CommittingGroup(broker, topic, f"g{unique}"):
            while tailer.stats.deleted < 2:
                assert asyncio.get_running_loop().time() < deadline, tailer.stats
                await asyncio.sleep(0.1)
        stop.set()
        stats = await running
    assert stats.events == 16  # published twice: the sinks store each event once
    assert await asyncio.to_thread(trail.messages_left) == 0


async def test_transient_failure_leaves_the_message_for_a_retry(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    records = fixture_records()[:5]
    await trail.put(log_key(7), log_bytes(records))
    config = TailerConfig(
        queue_url=trail.queue_url,
        region="us-east-1",
        endpoint_url=moto_endpoint,
        wait_time_s=0,
        visibility_timeout_s=1,
    )
    failing = CloudTrailTailer(config, _FailingPublisher(), RejectionLog(tmp_path))  # type: ignore[arg-type]
    stats = await failing.run(until_idle=True)
    assert stats.retried >= 1 and stats.deleted == 1  # only the s3:TestEvent
    assert await asyncio.to_thread(trail.messages_left) == 1

    await asyncio.sleep(1.2)  # the visibility timeout passes; a healthy tailer gets it
    async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        healthy = CloudTrailTailer(config, publisher, RejectionLog(tmp_path))
        stats2 = await healthy.run(until_idle=True)
    assert stats2.events == 5
    assert await asyncio.to_thread(trail.messages_left) == 0
    got = await consume(broker, topic_name(Topic.CLOUDTRAIL, prefix), 5)
    assert len(got) == 5


# --- backfill ------------------------------------------------------------------------------


def _local_logs(root: Path) -> set[str]:
    """The fixture split over three files (gz, plain, nested gz) plus junk; its event ids."""
    records = fixture_records()
    day = root / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2017" / "06" / "01"
    day.mkdir(parents=True)
    (day / "a.json.gz").write_bytes(log_bytes(records[:50]))
    (day / "b.json").write_bytes(log_bytes(records[50:100], compress=False))
    (day / "sub").mkdir()
    (day / "sub" / "c.json.gz").write_bytes(log_bytes(records[100:]))
    (day / "broken.json.gz").write_bytes(b"nope")
    (day / "notes.txt").write_text("ignored")
    digest = root / "AWSLogs" / ACCOUNT / "CloudTrail-Digest" / "us-east-1"
    digest.mkdir(parents=True)
    (digest / "d.json.gz").write_bytes(gzip.compress(b'{"digestStartTime": "x"}'))
    return {r["eventID"] for r in records}


async def test_backfill_local_dir_and_resume(broker: str, unique: str, tmp_path: Path) -> None:
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    logs = tmp_path / "logs"
    ids = _local_logs(logs)
    data_dir = tmp_path / "data"
    resume = ResumeFile(data_dir / RESUME_FILE)
    # A previous run got as far as a.json.gz.
    done_before = (
        (logs / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1/2017/06/01/a.json.gz")
        .resolve()
        .as_uri()
    )
    resume.mark_done(done_before)
    await resume.close()
    seen: list[str] = []
    async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        stats = await backfill_local(
            logs,
            publisher=publisher,
            ack=None,
            rejections=RejectionLog(data_dir),
            resume=resume,
            progress=lambda source, parsed: seen.append(source),
        )
    assert stats.files_found == 4  # a, b, c, broken: not the digest, not notes.txt
    assert stats.already_done == 1
    assert stats.events == 92
    assert (stats.files_done, stats.rejected_files) == (2, 1)
    assert len(seen) == 4
    got = await consume(broker, topic_name(Topic.CLOUDTRAIL, prefix), 92)
    got_ids = {decode(CloudTrailEvent, m.value).event_id for m in got}
    assert len(got) == 92 and got_ids < ids

    # Resuming again publishes nothing.
    async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        again = await backfill_local(
            logs, publisher=publisher, ack=None, rejections=RejectionLog(data_dir), resume=resume
        )
    assert (again.already_done, again.still_rejected, again.events) == (3, 1, 0)


async def test_local_listing_order_links_and_digests(tmp_path: Path) -> None:
    """The listing of a backfill --path: every .json/.json.gz file below the root, in the
    order of sorted paths (part by part), a linked file by its target, a linked folder not
    followed, digests (by folder or by name) and other files left out."""
    root = tmp_path / "logs"
    wanted = [
        "a/b.json",
        "a/c/d.json.gz",
        "a-c/z.json",
        "Ä é.json.gz",
    ]
    for name in [*wanted, "notes.txt", "CloudTrail-Digest/x.json.gz"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"{}")
    (root / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_x_20170601T0000Z.json.gz").write_bytes(b"")
    (root / "linked.json").symlink_to(root / "a" / "b.json")
    (root / "linked-dir").symlink_to(root / "a", target_is_directory=True)
    (root / "dangling.json").symlink_to(root / "missing.json")
    found = await list_local_logs(root)
    expected = sorted([root / name for name in wanted] + [root / "linked.json"])
    assert [f.path for f in found] == [
        (root / "a" / "b.json").resolve() if p.name == "linked.json" else p.resolve()
        for p in expected
    ]
    assert [f.uri for f in found] == [f.path.as_uri() for f in found]
    stat = (root / "a" / "b.json").stat()
    assert found[0].size == 2 and found[0].fingerprint == f"2:{stat.st_mtime_ns}"
    # One file given by name: itself.
    assert [f.path for f in await list_local_logs(root / "linked.json")] == [
        (root / "a" / "b.json").resolve()
    ]


async def test_backfill_cli_subprocess_resumes(broker: str, unique: str, tmp_path: Path) -> None:
    """The real command against a real consumer group: files count as done once the group
    committed past them; a rejected file makes the run fail, is skipped while unchanged and
    read again once it changed; digests are recognised by name outside their folder."""
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    logs = tmp_path / "logs"
    ids = _local_logs(logs)
    day = logs / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2017" / "06" / "01"
    (
        day / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_t_us-east-1_20170601T000000Z.json.gz"
    ).write_bytes(gzip.compress(b'{"digestStartTime": "x"}'))
    args = (
        "cloudtrail", "backfill", "--path", str(logs), "--bootstrap", broker,
        "--topic-prefix", prefix, "--data-dir", str(tmp_path / "data"),
        "--consumer-group", f"g{unique}",
    )  # fmt: skip
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    async with CommittingGroup(broker, topic, f"g{unique}") as group:
        first = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
        assert first.returncode == 1, first.stderr
        assert "3 file(s) stored (142 events)" in first.stderr
        assert "1 rejected file(s)" in first.stderr
        assert "cloudinv cloudtrail rejected" in first.stderr
        second = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        assert "0 file(s) stored (0 events), 3 already done" in second.stderr
        assert "1 unchanged since rejected" in second.stderr
        # The rejected file is replaced by a good one: the next run reads it.
        extra = [{**fixture_records()[0], "eventID": "fixed-1"}]
        (day / "broken.json.gz").write_bytes(log_bytes(extra))
        third = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
        assert third.returncode == 0, third.stderr
        assert "1 file(s) stored (1 events), 3 already done" in third.stderr
    got_ids = [decode(CloudTrailEvent, m.value).event_id for m in group.messages]
    assert sorted(got_ids) == sorted(ids | {"fixed-1"})


async def test_backfill_cli_rejected_records_exit_1_and_the_file_is_done(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Records that are not events (in a file that is otherwise good) make the real command
    exit 1 with its last line pointing to `cloudinv cloudtrail rejected`; the file's good
    events are stored and the file is done, so the next run skips it and exits 0."""
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    logs = tmp_path / "logs"
    day = logs / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2017" / "06" / "01"
    day.mkdir(parents=True)
    good = fixture_records()[:5]
    no_id = {key: value for key, value in good[0].items() if key != "eventID"}
    records: list[Any] = [*good, no_id, "not a record"]
    (day / "mixed.json.gz").write_bytes(log_bytes(records))
    data = tmp_path / "data"
    args = (
        "cloudtrail", "backfill", "--path", str(logs), "--bootstrap", broker,
        "--topic-prefix", prefix, "--data-dir", str(data), "--consumer-group", f"g{unique}",
    )  # fmt: skip
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    async with CommittingGroup(broker, topic, f"g{unique}") as group:
        first = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
        assert first.returncode == 1, first.stderr
        assert "1 file(s) stored (5 events)" in first.stderr
        assert "0 rejected file(s), 2 rejected record(s)" in first.stderr
        last = first.stderr.strip().splitlines()[-1]
        assert "2 record(s)" in last and "cloudinv cloudtrail rejected" in last, first.stderr
        again = await asyncio.to_thread(run_cli, *args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "0 file(s) stored (0 events), 1 already done" in again.stderr
    assert sorted(decode(CloudTrailEvent, m.value).event_id for m in group.messages) == sorted(
        r["eventID"] for r in good
    )
    listed = run_cli("cloudtrail", "rejected", "--data-dir", str(data), cwd=tmp_path)
    assert "mixed.json.gz" in listed.stdout and "2 record(s) skipped" in listed.stdout


def test_backfill_cli_needs_a_running_instance_or_bootstrap(tmp_path: Path) -> None:
    result = run_cli(
        "cloudtrail", "backfill", "--path", str(tmp_path), "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "no running cloudinv instance" in result.stderr
    bad = run_cli(
        "cloudtrail",
        "backfill",
        "--bucket",
        "b",
        "--from",
        "2024-02-02",
        "--to",
        "2024-02-01",
        "--bootstrap",
        "127.0.0.1:1",
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "before --from" in bad.stderr


def test_backfill_cli_with_kafka_unreachable_is_a_clear_error_and_marks_nothing(
    tmp_path: Path,
) -> None:
    """Files are read while the publisher connects; a broker that cannot be reached stops the
    command with the publisher's error, not a retry per file, and no file is marked done."""
    from cloudinv.runtime.processes import free_port

    logs = tmp_path / "logs"
    _local_logs(logs)
    data = tmp_path / "data"
    result = run_cli(
        "cloudtrail", "backfill", "--path", str(logs), "--bootstrap",
        f"127.0.0.1:{free_port()}", "--data-dir", str(data), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "cannot reach Kafka" in result.stderr
    assert "Traceback" not in result.stderr
    # Only the broken file is marked (rejected: it needs no broker); nothing is done.
    marks = (data / RESUME_FILE).read_text().splitlines()
    assert len(marks) == 1 and marks[0].startswith("rejected\t"), marks


def test_day_prefixes_include_the_last_day() -> None:
    assert day_prefixes("p/", date(2024, 2, 28), date(2024, 3, 1)) == [
        "p/2024/02/28/",
        "p/2024/02/29/",
        "p/2024/03/01/",
    ]


async def test_backfill_s3_date_range(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    records = fixture_records()

    def batch(tag: str, n: int) -> list[dict[str, Any]]:
        return [{**r, "eventID": f"{tag}-{i}"} for i, r in enumerate(records[:n])]

    # Under a key prefix; an org trail path; days before, inside and after the range.
    base = "trails/"
    await trail.put(base + log_key(1, day="2017/05/31"), log_bytes(batch("before", 3)))
    await trail.put(base + log_key(2, day="2017/06/01"), log_bytes(batch("first", 4)))
    await trail.put(
        base + log_key(3, day="2017/06/02", region="eu-west-1"), log_bytes(batch("last", 5))
    )
    org_key = "AWSLogs/o-abcdefghij/222200000000/CloudTrail/us-east-1/2017/06/02/x.json.gz"
    await trail.put(base + org_key, log_bytes(batch("org", 6)))
    await trail.put(base + log_key(4, day="2017/06/03"), log_bytes(batch("after", 7)))
    digest = f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2017/06/01/d.json.gz"
    await trail.put(base + digest, gzip.compress(b"{}"))

    async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        stats = await backfill_s3(
            trail.bucket,
            date(2017, 6, 1),
            date(2017, 6, 2),
            prefix="trails",
            publisher=publisher,
            ack=None,
            rejections=RejectionLog(tmp_path),
            resume=ResumeFile(tmp_path / RESUME_FILE),
            endpoint_url=moto_endpoint,
            region="us-east-1",
        )
    assert (stats.files_found, stats.events, stats.rejected_files) == (3, 15, 0)
    got = await consume(broker, topic_name(Topic.CLOUDTRAIL, prefix), 15)
    tags = sorted({decode(CloudTrailEvent, m.value).event_id.split("-")[0] for m in got})
    assert tags == ["first", "last", "org"] and len(got) == 15


async def test_missing_queue_is_a_clear_error(moto_endpoint: str, tmp_path: Path) -> None:
    config = TailerConfig(
        queue_url=f"{moto_endpoint}/123456789012/no-such-queue",
        region="us-east-1",
        endpoint_url=moto_endpoint,
        wait_time_s=0,
    )
    tailer = CloudTrailTailer(config, _FailingPublisher(), RejectionLog(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(TailerError, match="does not exist"):
        await tailer.run(until_idle=True)


async def test_stop_does_not_wait_out_the_long_poll(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    await asyncio.to_thread(trail.sqs.purge_queue, QueueUrl=trail.queue_url)
    config = TailerConfig(
        queue_url=trail.queue_url, region="us-east-1", endpoint_url=moto_endpoint, wait_time_s=20
    )
    tailer = CloudTrailTailer(config, _FailingPublisher(), RejectionLog(tmp_path))  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    loop.call_later(0.5, stop.set)
    await asyncio.wait_for(tailer.run(stop), timeout=10)
    assert loop.time() - started < 5
