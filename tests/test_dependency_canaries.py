"""Canaries for the private internals of dependencies that cloudinv relies on.

Four modules reach past a dependency's public API, three for measured speed and one for
correctness:

- ``streams/batch_delivery.py`` copies faust-streaming's ``Consumer._drain_messages`` (with
  batch-fed topics diverted) and reads private names of Faust's consumer, conductor and
  monitor;
- ``producers/credentials.py`` subclasses aiobotocore's HTTP session and client creator,
  overriding private methods, patches ``aiobotocore.session.AioClientCreator``, and sets a
  botocore session's ``_credentials``;
- ``streams/app.py`` subclasses Faust's aiokafka consumer and its consumer thread, to set
  aiokafka's fetch wait that Faust fixes at 1.5 s (``kafka.fetch_max_wait_ms``);
- ``cloudinv/core/kafka_holes.py`` replaces aiokafka's ``PartitionRecords`` (by its name in
  ``aiokafka.consumer.fetcher``), wrapping the record batches it iterates, so that a fetch stops
  at a batch the embedded broker has not made readable yet.

Both dependencies are pinned exactly in pyproject.toml. These tests fail the moment an
upgrade changes what is relied on: each relied-on function's source must hash as recorded.
When one fails after an upgrade: read the new source of the function named, bring the module
above in line with it (for ``_drain_messages``, copy the new loop and re-apply the batch
diversion), run bench/changes.py and bench/cloudtrail.py, then record the new hash and pin.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cloudinv.core import kafka_holes

ROOT = Path(__file__).resolve().parents[1]

PINNED = {"faust-streaming": "0.15.3", "aiobotocore": "3.10.0", "aiokafka": "0.14.0"}

RELIED_ON: dict[str, tuple[str, str]] = {
    # faust-streaming 0.15.3, for streams/batch_delivery.py
    "faust.transport.consumer:Consumer._drain_messages": (
        "44a2500309e83c63",
        "copied as BatchingConsumer._drain_messages",
    ),
    "faust.transport.consumer:Consumer.__init__": (
        "302410d59e6972d1",
        "_read_offset, _commit_every, suspend_flow",
    ),
    "faust.transport.consumer:Consumer._add_gap": ("4df2573ded7c1c2c", "called for offset gaps"),
    "faust.transport.conductor:Conductor.__init__": ("441bc3b1df592aa7", "_tp_index, _compiler"),
    "faust.transport.conductor:ConductorCompiler.build": (
        "837cf521368c1ee4",
        "the per-partition delivery of the other channels",
    ),
    "faust.sensors.monitor:Monitor.__init__": (
        "71b613e8019232d1",
        "the per-topic counters updated per batch",
    ),
    # faust-streaming 0.15.3, for streams/app.py (the fetch wait)
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread": (
        "0870ec53dea75083",
        "overridden by FetchWaitConsumer",
    ),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_consumer": (
        "a4dc6ba0681a298c",
        "overridden by _FetchWaitThread, which sets the consumer's _fetch_max_wait_ms",
    ),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": (
        "c2701bfc3e6f6cad",
        "passes a fixed fetch_max_wait_ms=1500, which _FetchWaitThread replaces",
    ),
    # aiokafka 0.14.0, for cloudinv/core/kafka_holes.py
    "aiokafka.consumer.fetcher:PartitionRecords.__init__": (
        "8ec1c2ae6ea1af87",
        "(tp, records, ...): records is what _unpack_records iterates; next_fetch_offset",
    ),
    "aiokafka.consumer.fetcher:PartitionRecords._unpack_records": (
        "b803e6d46480732c",
        "iterates records.has_next() / next_batch(), moves next_fetch_offset per batch",
    ),
    "aiokafka.consumer.fetcher:Fetcher._proc_fetch_request": (
        "59bf948fff47eed5",
        "builds PartitionRecords by the module's global name",
    ),
    "aiokafka.consumer.fetcher:FetchResult.getall": (
        "3e717e30de5068d5",
        "the position becomes next_fetch_offset when the records end (at a hole)",
    ),
    # aiobotocore 3.10.0 (and the botocore it pins), for producers/credentials.py
    "aiobotocore.httpsession:AIOHTTPSession.__init__": ("ed72f5104696dd32", "_timeout"),
    "aiobotocore.httpsession:AIOHTTPSession._get_session": (
        "9050ac5aa443ec89",
        "overridden by _PooledHTTPSession",
    ),
    "aiobotocore.httpsession:AIOHTTPSession._create_connector": (
        "b902e9e7f91a58d5",
        "called by SharedConnections",
    ),
    "aiobotocore.client:AioClientCreator._create_client_class": (
        "de098b5896a384a5",
        "overridden by _SharingClientCreator",
    ),
    "botocore.client:ClientCreator._load_service_model": (
        "6d785815097c0daa",
        "overridden by _SharingClientCreator",
    ),
    "aiobotocore.session:AioSession._create_client": (
        "e87fdfc754f67bdc",
        "names the module's AioClientCreator, which credentials.py replaces",
    ),
    "aiobotocore.session:AioSession.get_credentials": (
        "288a52de70cdb63c",
        "reads _credentials, which AwsAccess.session sets",
    ),
}


def _resolve(target: str) -> object:
    module_name, _, qualname = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
        if obj is kafka_holes.GuardedPartitionRecords:
            obj = kafka_holes.ORIGINAL_PARTITION_RECORDS  # what the guard replaced
    return obj


def source_hash(target: str) -> str:
    source = inspect.getsource(_resolve(target))  # type: ignore[arg-type]
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_the_overridden_dependencies_are_pinned_exactly_to_what_is_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        req.name: str(req.specifier)
        for req in map(Requirement, project["dependencies"])
        if req.name in PINNED
    }
    assert pins == {name: f"=={v}" for name, v in PINNED.items()}, pins
    for name, pinned in PINNED.items():
        assert version(name) == pinned, f"{name} {version(name)} is installed, {pinned} pinned"


@pytest.mark.parametrize("target", sorted(RELIED_ON))
def test_relied_on_internals_are_unchanged(target: str) -> None:
    expected, why = RELIED_ON[target]
    assert source_hash(target) == expected, (
        f"{target} changed ({why}): see this module's docstring for what to check"
    )


def test_the_private_names_used_still_exist() -> None:
    import faust
    from faust.transport.consumer import Consumer
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types.tuples import Message

    assert issubclass(faust_aiokafka.Consumer, Consumer)
    assert hasattr(Message, "incref") and hasattr(Consumer, "wait_first")
    assert "_consumer" in vars(faust.App) and "_n_acked" in vars(Consumer)


def test_the_hole_guard_is_in_place_once_a_stream_app_exists(tmp_path: Path) -> None:
    from aiokafka.consumer import fetcher

    from cloudinv.core import kafka_holes
    from cloudinv.streams.app import StreamConfig, create_app

    create_app(StreamConfig(bootstrap="127.0.0.1:9", data_dir=tmp_path))
    assert fetcher.PartitionRecords is kafka_holes.GuardedPartitionRecords


def test_the_client_creator_patch_is_in_place() -> None:
    """If aiobotocore stops naming AioClientCreator in its session module, the patch is
    left out silently and every client builds its models again: this says so."""
    import aiobotocore.session

    from cloudinv.producers import credentials

    assert aiobotocore.session.AioClientCreator is credentials._SharingClientCreator
