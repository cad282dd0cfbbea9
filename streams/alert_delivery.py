"""Delivering alert notifications from the durable outbox: webhooks (generic JSON or Slack's
incoming-webhook format), Amazon SNS, and the alerts topic.

The :class:`Dispatcher` runs one task per destination. Each task leases the oldest
undelivered notification of its destination
(:meth:`~cloudinv.sinks.alerts_store.AlertsStore.claim`),
delivers it, and marks it delivered; on failure it reschedules the same row after a backoff
(:class:`RetryPolicy`) and tries again, forever, so an alert raised while a destination is
down reaches it once it is back. A destination only ever waits on itself: the pipeline never
waits on any of them (alerts are queued in the store's outbox in the transaction that raises
them), and one destination being down delays no other.

Notifications of one destination are delivered in order, each at least once; every delivery
carries its ``notification_id`` (body field ``id`` and header ``Idempotency-Key``), so a
receiver that may see a retry after a lost acknowledgement can drop the duplicate.

A refusal that no retry can fix (an HTTP 4xx other than 408, 425 and 429; an SNS
``InvalidParameter``) is kept in the outbox as ``dead`` with the error, and delivery moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
import orjson

from cloudinv import __version__
from cloudinv.core.models import utcnow
from cloudinv.sinks.alerts_store import AlertNotification, AlertsBackend, OutboxItem, OutboxWait

__all__ = [
    "DeliveryError",
    "Destination",
    "Dispatcher",
    "RetryPolicy",
    "SnsDestination",
    "TopicDestination",
    "WebhookDestination",
    "generic_payload",
    "slack_payload",
]

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A destination did not take a notification; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts at one notification.

    The defaults (2 s, doubling, at most 60 s) ride out outages of minutes and deliver at
    most a minute after the destination is back; tests shrink them.
    """

    first_delay_s: float = 2.0
    max_delay_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...)."""
        base = self.first_delay_s * self.factor ** max(0, failures - 1)
        spread = 1.0 + random.uniform(-self.jitter, self.jitter)
        return float(min(self.max_delay_s, base) * spread)


class Destination(Protocol):
    name: str
    """Stable and free of secrets: the outbox rows are keyed by it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, notification: AlertNotification) -> None:
        """Deliver or raise :class:`DeliveryError` (anything else counts as transient)."""
        ...


# ---------------------------------------------------------------------------------------------
# Payloads


def generic_payload(notification: AlertNotification) -> dict[str, Any]:
    """The generic JSON body: the notification, with ``type`` alert.opened/alert.resolved."""
    return {
        "id": notification.notification_id,
        "type": f"alert.{notification.kind}",
        "seq": notification.seq,
        "at": notification.at.isoformat(),
        "alert": notification.alert.model_dump(mode="json"),
    }


_SEVERITY_MARK = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":white_circle:",
    "info": ":information_source:",
}


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notification: AlertNotification) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification fallback) and blocks."""
    alert = notification.alert
    resolved = notification.kind == "resolved"
    resource = alert.name or alert.key
    verb = "resolved" if resolved else "opened"
    text = (
        f"[{alert.severity.upper()}] {alert.title}: {resource} "
        f"({alert.account_id}/{alert.region}) {verb}"
    )
    header = ("Resolved: " if resolved else "") + alert.title
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header[:150]}},
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": f"*Severity*\n{_SEVERITY_MARK[alert.severity]} {alert.severity}",
                    },
                    {"type": "mrkdwn", "text": f"*Rule*\n`{_mrkdwn(alert.rule_id)}`"},
                    {"type": "mrkdwn", "text": f"*Resource*\n{_mrkdwn(resource)[:500]}"},
                    {
                        "type": "mrkdwn",
                        "text": f"*Account / region*\n{alert.account_id} / {alert.region}",
                    },
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _mrkdwn(
                            f"{verb} {notification.at.isoformat()} · alert {alert.alert_id} "
                            f"· opening {alert.opening} · {alert.key}"
                        )[:2000],
                    }
                ],
            },
        ],
    }


# ---------------------------------------------------------------------------------------------
# Destinations

_RETRYABLE_4XX = frozenset({408, 425, 429})


class WebhookDestination:
    """POSTs each notification as JSON to one URL (generic or Slack format)."""

    def __init__(self, url: str, format: str = "generic", *, timeout_s: float = 10.0) -> None:
        if format not in ("generic", "slack"):
            raise ValueError(f"webhook format {format!r}: expected generic or slack")
        self.url = url
        self.format = format
        self.timeout_s = timeout_s
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        self.name = f"webhook:{format}:{digest}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": f"cloudinv/{__version__}"},
            )

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def deliver(self, notification: AlertNotification) -> None:
        if self._session is None:
            await self.start()
        assert self._session is not None
        payload = (
            slack_payload(notification) if self.format == "slack" else generic_payload(notification)
        )
        try:
            async with self._session.post(
                self.url,
                data=orjson.dumps(payload),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": notification.notification_id,
                    "X-Cloudinv-Event": f"alert.{notification.kind}",
                },
            ) as response:
                body = (await response.text())[:200]
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return
        permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
        raise DeliveryError(f"HTTP {status}: {body}", permanent=permanent)


_SUBJECT_UNSAFE = re.compile(r"[^\x20-\x7e]")


class SnsDestination:
    """Publishes each notification (the generic JSON) to one SNS topic."""

    def __init__(
        self, topic_arn: str, *, endpoint_url: str | None = None, timeout_s: float = 10.0
    ) -> None:
        parts = topic_arn.split(":")
        if len(parts) < 6 or parts[2] != "sns":
            raise ValueError(f"{topic_arn!r} is not an SNS topic ARN")
        self.topic_arn = topic_arn
        self.region = parts[3]
        self.endpoint_url = endpoint_url
        self.timeout_s = timeout_s
        self.name = f"sns:{topic_arn}"
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is not None:
            return
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        stack = contextlib.AsyncExitStack()
        config = AioConfig(
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
            retries={"mode": "standard", "max_attempts": 2},
        )
        self._client = await stack.enter_async_context(
            get_session().create_client(
                "sns", region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        )
        self._stack = stack

    async def stop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def deliver(self, notification: AlertNotification) -> None:
        if self._client is None:
            await self.start()
        alert = notification.alert
        subject = _SUBJECT_UNSAFE.sub(
            " ", f"[{alert.severity.upper()}] {alert.title} ({notification.kind})"
        )[:100]
        try:
            await self._client.publish(
                TopicArn=self.topic_arn,
                Subject=subject,
                Message=orjson.dumps(generic_payload(notification)).decode(),
                MessageAttributes={
                    "severity": {"DataType": "String", "StringValue": alert.severity},
                    "rule_id": {"DataType": "String", "StringValue": alert.rule_id},
                    "kind": {"DataType": "String", "StringValue": notification.kind},
                },
            )
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            raise DeliveryError(
                f"{type(exc).__name__}: {exc}",
                permanent=code in ("InvalidParameter", "InvalidParameterValue"),
            ) from None


class TopicDestination:
    """Hands each notification to a send function (the worker's alerts topic producer)."""

    name = "topic"

    def __init__(self, send: Callable[[AlertNotification], Awaitable[None]]) -> None:
        self._send = send

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def deliver(self, notification: AlertNotification) -> None:
        try:
            await self._send(notification)
        except Exception as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The dispatcher


@dataclass
class DestinationStats:
    delivered: int = 0
    failures: int = 0
    dead: int = 0
    last_error: str | None = None


@dataclass
class Dispatcher:
    """Delivers every destination's outbox rows (see the module docstring)."""

    store: AlertsBackend
    destinations: Sequence[Destination]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    idle_poll_s: float = 1.0
    """How often an idle destination looks for rows queued by another process."""
    keep_delivered: timedelta = timedelta(days=7)
    """Delivered outbox rows are forgotten after this (checked hourly)."""
    stats: dict[str, DestinationStats] = field(default_factory=dict)
    _wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.destinations]

    def wake(self) -> None:
        """New rows were queued: idle destinations look now rather than at the next poll."""
        for event in self._wakeups.values():
            event.set()

    async def start(self) -> None:
        for destination in self.destinations:
            await destination.start()
            self.stats[destination.name] = DestinationStats()
            self._wakeups[destination.name] = asyncio.Event()
            self._tasks.append(
                asyncio.create_task(self._run(destination), name=f"deliver {destination.name}")
            )
        self._tasks.append(asyncio.create_task(self._prune(), name="prune alert outbox"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for destination in self.destinations:
            try:
                await destination.stop()
            except Exception:
                log.exception("closing alert destination %s failed", destination.name)

    async def _prune(self) -> None:
        while True:
            try:
                await self.store.prune_delivered(utcnow() - self.keep_delivered)
            except Exception:
                log.exception("pruning the alert outbox failed")
            await asyncio.sleep(3600)

    async def _idle(self, name: str, seconds: float) -> None:
        wakeup = self._wakeups[name]
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await wakeup.wait()
        except TimeoutError:
            pass
        wakeup.clear()

    async def _run(self, destination: Destination) -> None:
        name = destination.name
        stats = self.stats[name]
        lease_s = self.timeout_s * 3 + 5
        down = False
        while True:
            try:
                claimed = await self.store.claim(name, lease_s)
            except Exception:
                log.exception("alert outbox of %s could not be read; retrying", name)
                await asyncio.sleep(self.idle_poll_s)
                continue
            if claimed is None:
                await self._idle(name, self.idle_poll_s)
                continue
            if isinstance(claimed, OutboxWait):
                wait = (claimed.until - utcnow()).total_seconds()
                # Not woken early: a backing-off destination keeps its schedule.
                await asyncio.sleep(min(max(wait, 0.01), self.idle_poll_s))
                continue
            try:
                down = await self._deliver(destination, claimed, stats, down)
            except Exception:
                # The outbox row keeps its lease until it expires, then is tried again.
                log.exception("recording a delivery to %s failed", name)
                await asyncio.sleep(self.idle_poll_s)

    async def _deliver(
        self, destination: Destination, item: OutboxItem, stats: DestinationStats, down: bool
    ) -> bool:
        """One attempt; returns whether the destination is now considered down."""
        name = destination.name
        try:
            async with asyncio.timeout(self.timeout_s):
                await destination.deliver(item.notification)
        except Exception as exc:  # DeliveryError, a timeout, or a bug in a destination
            error = str(exc) or type(exc).__name__
            stats.failures += 1
            stats.last_error = error
            if isinstance(exc, DeliveryError) and exc.permanent:
                stats.dead += 1
                log.error(
                    "alert destination %s refused %s for good: %s",
                    name,
                    item.notification.notification_id,
                    error,
                )
                await self.store.give_up(item.id, error)
                return down
            delay = self.retry.delay(item.attempts + 1)
            if not down:
                log.warning(
                    "alert destination %s is failing (%s); retrying with backoff", name, error
                )
            await self.store.retry_later(item.id, error, utcnow() + timedelta(seconds=delay))
            return True
        await self.store.delivered(item.id)
        stats.delivered += 1
        if down:
            log.info("alert destination %s is delivering again", name)
        return False
