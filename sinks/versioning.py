"""The version state machine every inventory store applies, as pure functions.

A store plans a batch of changes against the latest stored version of each key (a
:class:`Head`) with :func:`plan`, in order, moving the head with :func:`advance` after each
applied change. A change is skipped when it would not move the key's state (a replay or a
re-detection: its configuration is already the open one, it deletes a key with nothing open,
or it is older than what is open or than the deletion already stored); otherwise it closes the
open version at its ``captured_at`` and, unless it is a deletion, opens a new one.

A change already stored (same ``change_id``) is not applied again, but it may be updated in
place when it comes back with a better attribution (:func:`improves`: the stored one has none,
or the new event is later): the attribution join (:mod:`cloudinv.streams.changes`) sends such
updates through the changes topic, and the store keeps the change's id and versions and logs
it again so that the live feed carries it.

Which write event explains a change (:func:`window`, :func:`best_attribution`): one that
happened after the prior state was last observed (``prior_seen_at``) and no later than the new
state was observed (``observed_at`` or ``captured_at``), the latest of them. CloudTrail gives
event times to the second (truncated), so the window opens one second early, and both ends
allow :data:`CLOCK_SKEW` between AWS's clock and the collector's.

Relationships (:class:`EdgeBook`) are versioned with the resource that declares them: an
applied change that opens a version gives its key the outgoing edges its configuration names
(:func:`cloudinv.catalog.relationships.edges_of_resource`), closing the open ones it no longer
names and opening the new ones at its ``captured_at``; a deletion closes them all. An edge
row is valid over ``[valid_from, valid_to)`` and records the change that opened it, as a
version does. Edges that stay are not touched, so an edge's ``valid_from`` is when it first
appeared, not the resource's latest change.

Used by :mod:`cloudinv.sinks.sqlite_store` and :mod:`cloudinv.sinks.dynamodb_store`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from cloudinv.catalog.event_resources import refs_of
from cloudinv.catalog.relationships import edges_of_resource
from cloudinv.core.models import Attribution, ChangeEvent, Edge

log = logging.getLogger(__name__)

__all__ = [
    "CLOCK_SKEW",
    "OBSERVED_LAG",
    "EdgeBook",
    "EdgeRow",
    "EdgeStep",
    "Head",
    "Step",
    "StepKind",
    "advance",
    "best_attribution",
    "improves",
    "plan",
    "unattributed_refs",
    "window",
    "window_us",
]

CLOCK_SKEW = timedelta(seconds=2)
"""Allowed difference between AWS's clock (event times) and the collector's (capture times)."""
_EARLY = timedelta(seconds=1) + CLOCK_SKEW
"""How much before ``prior_seen_at`` an event may be stamped: CloudTrail truncates to the
second, plus the skew."""
OBSERVED_LAG = timedelta(hours=1)
"""How long after its ``captured_at`` a change's new state may have been observed (a
deletion found by a scan carries the scan's start; the scan lists the scope later)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Head:
    """A key's most recent version while a batch is planned (times in microseconds)."""

    change_id: str
    config_hash: str
    valid_from: int
    valid_to: int | None
    stored: bool = True
    """In the store already (closed with an update), or opened by this batch."""

    @property
    def is_open(self) -> bool:
        return self.valid_to is None


class StepKind(Enum):
    APPLY = "apply"
    SKIP = "skip"
    INVALID = "invalid"
    """A creation or modification without a configuration or hash: logged, not stored."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    closes: Head | None = None
    """The open version this change closes at its capture time."""
    opens: bool = False
    """Whether it opens a new version (every applied change but a deletion)."""


_SKIP = Step(StepKind.SKIP)


def plan(change: ChangeEvent, t: int, head: Head | None) -> Step:
    """What applying ``change`` (captured at ``t`` µs) does to a key whose latest version is
    ``head`` (``None``: never stored). An invalid change is logged here, for both stores."""
    current = head if head is not None and head.is_open else None
    if change.change_type == "deleted":
        if current is None or t <= current.valid_from:
            return _SKIP  # nothing open to delete, or older than what is open
        return Step(StepKind.APPLY, closes=current)
    if change.after_hash is None or change.configuration is None:
        log.warning(
            "change %s (%s of %s) has no configuration or after_hash: not stored",
            change.change_id,
            change.change_type,
            change.key,
        )
        return Step(StepKind.INVALID)
    if current is not None:
        if current.config_hash == change.after_hash or t <= current.valid_from:
            return _SKIP  # already in that state, or older than what is open
        return Step(StepKind.APPLY, closes=current, opens=True)
    if head is not None and head.valid_to is not None and t < head.valid_to:
        return _SKIP  # a re-creation older than the deletion already stored
    return Step(StepKind.APPLY, opens=True)


def advance(change: ChangeEvent, t: int, step: Step) -> Head:
    """The key's latest version once ``step`` (an applied one) is done."""
    if step.kind is not StepKind.APPLY:
        raise ValueError(f"only an applied step moves a key (got {step.kind.value})")
    if step.opens:
        return Head(change.change_id, change.after_hash or "", t, None, stored=False)
    closed = step.closes
    assert closed is not None
    return Head(closed.change_id, closed.config_hash, closed.valid_from, t, stored=closed.stored)


def _order(attribution: Attribution) -> tuple[datetime, str]:
    return (attribution.event_time, attribution.event_id)


def improves(new: Attribution | None, stored: Attribution | None) -> bool:
    """True if ``new`` should replace ``stored``: there was none, or its event is later."""
    if new is None:
        return False
    return stored is None or _order(new) > _order(stored)


def window(change: ChangeEvent) -> tuple[datetime | None, datetime]:
    """``(after, until)``: a write event at ``after < t <= until`` may have caused ``change``
    (``after`` ``None``: no earlier observation bounds it)."""
    until = change.observed_at or change.captured_at
    after = change.prior_seen_at
    return (None if after is None else after - _EARLY, until + CLOCK_SKEW)


def window_us(
    captured_us: int, prior_seen_at: str | None, observed_at: str | None
) -> tuple[int | None, int]:
    """:func:`window` in microseconds, from a stored change's fields (ISO 8601 strings)."""
    until = captured_us if observed_at is None else _us(datetime.fromisoformat(observed_at))
    after = None if prior_seen_at is None else _us(datetime.fromisoformat(prior_seen_at))
    return (None if after is None else after - _us_of(_EARLY), until + _us_of(CLOCK_SKEW))


def _us_of(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _us(value: datetime) -> int:
    return _us_of(value - _EPOCH)


def best_attribution(change: ChangeEvent, candidates: Iterable[Attribution]) -> Attribution | None:
    """The write event among ``candidates`` (events naming the changed resource) that
    explains ``change`` better than its current attribution, or ``None``."""
    after, until = window(change)
    best = change.attribution
    found: Attribution | None = None
    for candidate in candidates:
        t = candidate.event_time
        if t > until or (after is not None and t <= after):
            continue
        if improves(candidate, best):
            best = found = candidate
    return found


def change_refs(change: ChangeEvent) -> list[str]:
    """The refs a write event may name the changed resource by."""
    return refs_of(
        change.resource_type,
        change.account_id,
        change.region,
        key=change.key,
        resource_id=change.resource_id,
        name=change.name,
    )


def unattributed_refs(changes: Iterable[ChangeEvent]) -> dict[str, list[str]]:
    """Change id -> the refs a write event may name it by, for the changes not yet
    attributed (what both stores' attribution join looks up)."""
    return {c.change_id: change_refs(c) for c in changes if c.attribution is None}


@dataclass(slots=True)
class EdgeRow:
    """One stored (or to be stored) relationship over ``[valid_from, valid_to)`` (µs)."""

    source_key: str
    source_type: str
    relationship: str
    target_key: str
    target_type: str
    valid_from: int
    valid_to: int | None
    change_id: str
    """The change that opened it."""
    stored: bool = True
    """In the store already (to be closed with an update), or opened by this batch."""

    @property
    def edge(self) -> Edge:
        return Edge.model_construct(
            relationship=self.relationship,
            target_key=self.target_key,
            target_type=self.target_type,
        )


@dataclass(frozen=True, slots=True)
class EdgeStep:
    """What one applied change did to its key's edges."""

    closed: list[EdgeRow]
    """Rows it closed: stored ones (``stored``) and ones this batch opened."""
    opened: list[EdgeRow]


class EdgeBook:
    """The open outgoing edges of a batch's keys while it is planned, and what to write.

    Load it with the open edge rows the store holds for the batch's keys; call
    :meth:`apply` for every applied step, in order (after :func:`plan`); then write
    :attr:`closed` (stored rows, now with ``valid_to``: update them) and :attr:`opened` (new
    rows, some already closed again within the batch: insert them).
    """

    def __init__(self, stored: Iterable[EdgeRow] = ()) -> None:
        self._open: dict[str, dict[Edge, EdgeRow]] = {}
        for row in stored:
            self._open.setdefault(row.source_key, {})[row.edge] = row
        self.closed: list[EdgeRow] = []
        self.opened: list[EdgeRow] = []

    def apply(self, change: ChangeEvent, t: int, step: Step) -> EdgeStep:
        """Move ``change.key``'s edges as the applied ``step`` (at ``t`` µs) moves its state."""
        if step.kind is not StepKind.APPLY:
            raise ValueError(f"only an applied step moves edges (got {step.kind.value})")
        held = self._open.setdefault(change.key, {})
        wanted = (
            edges_of_resource(
                change.resource_type,
                change.key,
                change.account_id,
                change.region,
                change.configuration,
            )
            if step.opens
            else frozenset()
        )
        done = EdgeStep(closed=[], opened=[])
        for edge in [e for e in held if e not in wanted]:
            row = held.pop(edge)
            row.valid_to = t
            done.closed.append(row)
            if row.stored:
                self.closed.append(row)
        for edge in sorted(wanted, key=lambda e: (e.relationship, e.target_key)):
            if edge in held:
                continue
            row = EdgeRow(
                source_key=change.key,
                source_type=change.resource_type,
                relationship=edge.relationship,
                target_key=edge.target_key,
                target_type=edge.target_type,
                valid_from=t,
                valid_to=None,
                change_id=change.change_id,
                stored=False,
            )
            held[edge] = row
            self.opened.append(row)
            done.opened.append(row)
        return done
