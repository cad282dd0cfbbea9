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
state was observed (``observed_at`` or ``captured_at``). CloudTrail gives event times to the
second (truncated), so the window opens one second early, and both ends allow
:data:`CLOCK_SKEW` between AWS's clock and the collector's. Of the events in the window, the
best ranked wins (:func:`rank`): one that acts on the resource (``match`` ``declared``) over
one that only names it as a parameter of an operation on another resource (``referenced``:
``CreateSnapshot`` names its volume, but a concurrent ``ModifyVolume`` changed it); then one
whose verb is the kind of change (:func:`cloudinv.catalog.event_resources.fits`:
``CreateSnapshot`` for a created snapshot, ``TerminateInstances`` for a deleted instance);
then the latest.

A change whose window holds no event may carry the previous change's event, marked
``inherited`` (:func:`inherited`), when it is the second half of a state transition that event
started: AWS moves a resource's lifecycle state (its type's ``state_field``) minutes after the
call (``pending`` → ``running`` after RunInstances, ``stopping`` → ``stopped``,
``shutting-down`` → ``terminated``). Only then: the type declares a state field, the previous
change of the key (whose new state this change leaves) carries a ``declared`` or ``inherited``
attribution and moved the state (or created the resource) into a transitional state (one
ending in ``-ing``: ``pending``, ``stopping``, ``deleting``), this change moves nothing but the
state and the fields declared to move with it (``state_moves``), and it was captured within
:data:`INHERIT_WITHIN` of the event. A deletion found long after its Delete/Terminate event (a
terminated instance stays listed for about an hour) inherits the event the same way when the
previous change was the state move that event caused and the resource was last seen within
:data:`GONE_WITHIN` of it. :func:`follow_ups` applies this along a key's history, so a change
attributed late passes its event on to the transitions after it.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any

from cloudinv.catalog.event_resources import fits, refs_of
from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.relationships import edges_of_resource, touches_relationships
from cloudinv.catalog.spec import ResourceSpec, search
from cloudinv.core.models import Attribution, ChangeEvent

log = logging.getLogger(__name__)

__all__ = [
    "CLOCK_SKEW",
    "GONE_WITHIN",
    "INHERIT_WITHIN",
    "OBSERVED_LAG",
    "EdgeBook",
    "EdgeRow",
    "EdgeStep",
    "Head",
    "Step",
    "StepKind",
    "advance",
    "best_attribution",
    "edges_of_history",
    "follow_ups",
    "improves",
    "inherit_in_batch",
    "inherited",
    "inheriting_keys",
    "may_inherit",
    "may_keep_edges",
    "needs_join",
    "plan",
    "rank",
    "rejoin",
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
INHERIT_WITHIN = timedelta(hours=1)
"""How long after its event a state transition may still carry it (``inherited``)."""
GONE_WITHIN = timedelta(hours=2)
"""How long after its Delete/Terminate event a resource may still have been listed for its
deletion to carry that event (terminated EC2 instances stay listed for about an hour)."""
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


_MATCH_RANK = {"inherited": 0, "referenced": 1, "declared": 2, None: 2}
"""An attribution of an older message (no ``match``) counts as it did then: as sure as any."""


def _in_window(change: ChangeEvent, attribution: Attribution) -> bool:
    after, until = window(change)
    t = attribution.event_time
    return t <= until and (after is None or t > after)


def rank(change: ChangeEvent, attribution: Attribution) -> tuple[bool, int, bool, datetime, str]:
    """How well ``attribution`` explains ``change``: higher is better (see the module's
    docstring). An event outside the change's window ranks below any inside it: the
    re-describe an older event triggered may have seen a later event's effect (the events of
    one resource reach the reactor out of order), and an inherited event is outside by
    definition."""
    return (
        _in_window(change, attribution),
        _MATCH_RANK[attribution.match],
        fits(change.change_type, attribution.event_name, change.resource_type),
        attribution.event_time,
        attribution.event_id,
    )


def rank_score(change: ChangeEvent, attribution: Attribution) -> int:
    """The kinds of :func:`rank` as one number, for a table column (the warehouse's
    ``attribution_rank``): 6 when in the change's window, plus 4 declared, 2 referenced or 0
    inherited, plus 1 when the event's verb fits the change. Ordered by it, then by the
    event's time and id, attributions order as by :func:`rank`."""
    in_window, match, verb_fits, _, _ = rank(change, attribution)
    return 6 * in_window + 2 * match + verb_fits


def improves(change: ChangeEvent, new: Attribution | None, stored: Attribution | None) -> bool:
    """True if ``new`` should replace ``stored`` on ``change``: there was none, ``new`` ranks
    higher, or both are inherited and ``new`` differs (the previous change's event, which an
    inherited one follows, was itself replaced)."""
    if new is None:
        return False
    if stored is None:
        return True
    if new.match == "inherited" and stored.match == "inherited":
        return new != stored
    return rank(change, new) > rank(change, stored)


def needs_join(change: ChangeEvent) -> bool:
    """Whether a stored write event might explain ``change`` better than its attribution:
    it has none, or one below the best kind (in the window, declared, with the change's
    verb)."""
    a = change.attribution
    return a is None or rank(change, a)[:3] < (True, 2, True)


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
    explains ``change`` better than its current attribution, or ``None``. Any event in the
    window beats an attribution from outside it (inherited, or a stale one from a
    re-describe)."""
    after, until = window(change)
    best = change.attribution
    if best is not None and not _in_window(change, best):
        best = None  # inherited, or carried by a re-describe from an older event
    found: Attribution | None = None
    for candidate in candidates:
        t = candidate.event_time
        if t > until or (after is not None and t <= after):
            continue
        if best is None or rank(change, candidate) > rank(change, best):
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
    """Change id -> the refs a write event may name it by, for the changes a write event
    may still explain better (:func:`needs_join`; what both stores' attribution join looks
    up)."""
    return {c.change_id: change_refs(c) for c in changes if needs_join(c)}


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
    def edge_id(self) -> tuple[str, str, str]:
        """What tells one edge of a source from another: (relationship, target key, type)."""
        return (self.relationship, self.target_key, self.target_type)


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

    A store may leave out the rows of keys whose changes will most likely leave their edges
    as they are (:func:`may_keep_edges`: most modifications), naming them in ``unloaded``
    (the keys that have open edges; only whether they have any decides) with a ``load``
    that reads one key's open rows: they are read only if a change of that key turns out to
    move its edges after all.
    """

    def __init__(
        self,
        stored: Iterable[EdgeRow] = (),
        *,
        unloaded: Iterable[str] = (),
        load: Callable[[str], Iterable[EdgeRow]] | None = None,
    ) -> None:
        # Keyed by (relationship, target key, target type): hashing tuples of strings is a
        # fraction of hashing Edge models, and a batch loads every open edge of its keys.
        self._open: dict[str, dict[tuple[str, str, str], EdgeRow]] = {}
        for row in stored:
            self._open.setdefault(row.source_key, {})[row.edge_id] = row
        self._unloaded = set(unloaded)
        if self._unloaded and load is None:
            raise ValueError("EdgeBook: keys left unloaded need a load function")
        self._load = load
        self.closed: list[EdgeRow] = []
        self.opened: list[EdgeRow] = []

    def apply(self, change: ChangeEvent, t: int, step: Step) -> EdgeStep:
        """Move ``change.key``'s edges as the applied ``step`` (at ``t`` µs) moves its state."""
        if step.kind is not StepKind.APPLY:
            raise ValueError(f"only an applied step moves edges (got {step.kind.value})")
        key = change.key
        if key in self._unloaded:
            # Open edges held, not read: enough to know they stay.
            if step.opens and _edges_stay(change, step):
                return EdgeStep(closed=[], opened=[])
            assert self._load is not None
            self._unloaded.discard(key)
            self._open[key] = {row.edge_id: row for row in self._load(key)}
        held = self._open.setdefault(key, {})
        if step.opens and held and _edges_stay(change, step):
            return EdgeStep(closed=[], opened=[])
        wanted = (
            {
                (e.relationship, e.target_key, e.target_type): e
                for e in edges_of_resource(
                    change.resource_type,
                    change.key,
                    change.account_id,
                    change.region,
                    change.configuration,
                )
            }
            if step.opens
            else {}
        )
        done = EdgeStep(closed=[], opened=[])
        for edge_id in [e for e in held if e not in wanted]:
            row = held.pop(edge_id)
            row.valid_to = t
            done.closed.append(row)
            if row.stored:
                self.closed.append(row)
        for edge_id in sorted(wanted):
            if edge_id in held:
                continue
            relationship, target_key, target_type = edge_id
            row = EdgeRow(
                source_key=change.key,
                source_type=change.resource_type,
                relationship=relationship,
                target_key=target_key,
                target_type=target_type,
                valid_from=t,
                valid_to=None,
                change_id=change.change_id,
                stored=False,
            )
            held[edge_id] = row
            self.opened.append(row)
            done.opened.append(row)
        return done


def may_keep_edges(change: ChangeEvent) -> bool:
    """Whether ``change`` leaves its key's open edges as they are if it modifies the version
    it was detected against (what :func:`_edges_stay` checks once planned): a store need not
    read those edges for it (see :class:`EdgeBook`)."""
    return (
        change.change_type == "modified"
        and change.before_hash is not None
        and bool(change.changed_paths)
        and not touches_relationships(change.resource_type, change.changed_paths)
    )


def _edges_stay(change: ChangeEvent, step: Step) -> bool:
    """Whether ``change`` leaves its key's open edges as they are, known without reading
    them from its configuration: it modifies the open version (its patch is relative to that
    configuration) and its patch touches none of the fields the type's relationships read.

    Only asked for a key with open edges: a resource stored before its type declared
    relationships has none, and gets them at its next change (as DynamoDB derives them)."""
    closes = step.closes
    return (
        closes is not None and closes.config_hash == change.before_hash and may_keep_edges(change)
    )


# -- inheritance along a key's state transitions -----------------------------------------------


def _spec_of(cfn_type: str) -> ResourceSpec | None:
    registry = default_registry()
    return registry.get(cfn_type) if cfn_type in registry else None


def _pointer(path: str) -> str:
    return "/" + path.replace(".", "/")


def _under(pointer: str, prefixes: Sequence[str]) -> bool:
    return any(pointer == p or pointer.startswith(p + "/") for p in prefixes)


@cache
def _state_paths(cfn_type: str) -> tuple[str, ...]:
    """JSON pointers of the type's state and the fields moving with it (empty: no state)."""
    spec = _spec_of(cfn_type)
    if spec is None or spec.state_field is None:
        return ()
    return tuple(_pointer(p) for p in (spec.state_field, *spec.state_moves))


def may_inherit(change: ChangeEvent) -> bool:
    """Whether ``change`` could carry its previous change's event (see :func:`inherited`):
    a deletion, or a modification of nothing but the state, of a type with a state field.
    Cheap: tells the stores which changes need their previous change looked up."""
    if change.change_type == "created":
        return False
    state = _state_paths(change.resource_type)
    if not state:
        return False
    if change.change_type == "deleted":
        return True
    return bool(change.changed_paths) and all(_under(p, state) for p in change.changed_paths)


def _transitional(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith("ing")


def inherited(change: ChangeEvent, previous: ChangeEvent | None) -> Attribution | None:
    """The attribution ``change`` inherits from ``previous`` (the change of the same key
    whose new state ``change`` leaves, with its current attribution), or ``None``: see the
    module's docstring for when."""
    if previous is None or previous.key != change.key:
        return None
    a = previous.attribution
    if a is None or a.match == "referenced" or previous.change_type == "deleted":
        return None
    if change.before_hash is None or previous.after_hash != change.before_hash:
        return None
    if not may_inherit(change):
        return None
    spec = _spec_of(change.resource_type)
    assert spec is not None and spec.state_field is not None
    state = _pointer(spec.state_field)
    # The previous change set the state: created the resource, or its patch touched the
    # state or something holding it.
    moved = previous.change_type == "created" or any(
        _under(p, (state,)) or _under(state, (p,)) for p in previous.changed_paths
    )
    if not moved:
        return None
    if change.change_type == "deleted":
        seen = change.prior_seen_at or change.captured_at
        if not fits("deleted", a.event_name, change.resource_type) or seen - a.event_time > (
            GONE_WITHIN
        ):
            return None
    else:
        if not _transitional(search(spec.state_field, previous.configuration or {})):
            return None
        if change.captured_at - a.event_time > INHERIT_WITHIN:
            return None
    return a.model_copy(update={"match": "inherited"})


def follow_ups(history: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    """Along one key's changes in capture order (each with its current attribution), the
    changes whose attribution inheritance sets or moves, with it; each sees the ones before
    it as updated."""
    updates: list[ChangeEvent] = []
    previous: ChangeEvent | None = None
    for change in history:
        current = change
        a = change.attribution
        if a is None or a.match == "inherited":
            found = inherited(change, previous)
            if found is not None and improves(change, found, a):
                current = change.model_copy(update={"attribution": found})
                updates.append(current)
        previous = current
    return updates


def rejoin(history: Sequence[ChangeEvent], candidates: Sequence[Attribution]) -> list[ChangeEvent]:
    """One key's stored changes in capture order, and write events naming the key: the
    changes whose attribution the events improve, directly or by inheritance along the
    history, with it (what ``record_write_events`` returns)."""
    updated: list[ChangeEvent] = []
    out: dict[str, ChangeEvent] = {}
    for change in history:
        found = best_attribution(change, candidates)
        if found is not None:
            change = change.model_copy(update={"attribution": found})
            out[change.change_id] = change
        updated.append(change)
    for change in follow_ups(updated):
        out[change.change_id] = change
    return list(out.values())


def inheriting_keys(changes: Iterable[ChangeEvent]) -> dict[str, datetime]:
    """Key -> the earliest capture time among ``changes`` (just stored, attribution join
    done) that may still inherit an attribution: the store looks up each key's change before
    that time (:func:`inherit_in_batch`)."""
    out: dict[str, datetime] = {}
    for change in changes:
        a = change.attribution
        if (a is None or a.match == "inherited") and may_inherit(change):
            first = out.get(change.key, change.captured_at)
            out[change.key] = min(first, change.captured_at)
    return out


def inherit_in_batch(
    changes: Sequence[ChangeEvent], keys: Iterable[str], previous: dict[str, ChangeEvent]
) -> list[ChangeEvent]:
    """Of ``changes`` (a stored batch, with the join's updates applied), those that inherit
    an attribution, with it. ``keys`` are the batch's :func:`inheriting_keys`; ``previous``
    holds, per such key, the stored change just before the batch's first one of that key."""
    histories: dict[str, dict[str, ChangeEvent]] = {
        key: {previous[key].change_id: previous[key]} if key in previous else {} for key in keys
    }
    for change in sorted(changes, key=lambda c: c.captured_at):
        history = histories.get(change.key)
        if history is not None:
            history.pop(change.change_id, None)  # a replay in the batch: its latest copy
            history[change.change_id] = change
    return [u for history in histories.values() for u in follow_ups(list(history.values()))]


def edges_of_history(
    versions: Iterable[tuple[str, str, str, str, str, int, int | None, dict[str, Any]]],
) -> list[EdgeRow]:
    """The edge rows of stored versions, as :class:`EdgeBook` would have written them:
    ``versions`` are (key, resource type, account, region, change id, valid_from, valid_to,
    configuration) in key and time order. For a store that kept versions before it kept
    relationships (an edge runs from the first version naming it to the last, or the
    deletion)."""
    book = EdgeBook()
    previous: tuple[str, int | None] | None = None
    for key, rtype, account, region, change_id, valid_from, valid_to, configuration in versions:
        if (
            previous is not None
            and previous[1] is not None
            and (previous[0] != key or previous[1] < valid_from)
        ):
            book.apply(_replayed(previous[0], rtype, account, region, "", None), previous[1], _GONE)
        change = _replayed(key, rtype, account, region, change_id, configuration)
        book.apply(change, valid_from, _OPENS)
        previous = (key, valid_to)
    if previous is not None and previous[1] is not None:
        book.apply(_replayed(previous[0], "", "", "", "", None), previous[1], _GONE)
    return book.opened


_OPENS = Step(StepKind.APPLY, opens=True)
_GONE = Step(StepKind.APPLY)


def _replayed(
    key: str,
    resource_type: str,
    account_id: str,
    region: str,
    change_id: str,
    configuration: dict[str, Any] | None,
) -> ChangeEvent:
    return ChangeEvent.model_construct(
        key=key,
        resource_type=resource_type,
        account_id=account_id,
        region=region,
        change_id=change_id,
        resource_id=key,
        change_type="modified" if configuration is not None else "deleted",
        configuration=configuration,
        captured_at=_EPOCH,
        detected_at=_EPOCH,
    )
