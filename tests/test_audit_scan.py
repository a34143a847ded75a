"""The fast scan of the audit chain finds exactly what the reference walk (ORM objects, one
event at a time) finds: for every kind of tampering, on both stores, in this process and
split among worker processes; its canonical bytes are ``_canonical``'s."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from promptship.auditkeys import parse_keys
from promptship.services import Promptship, audit, chainref, chainscan, verification
from promptship.services.checkpoints import Checkpoint
from promptship.store.db import Database
from promptship.store.models import AuditEvent, AuditHead
from tests.conftest import TEST_AUDIT_KEY
from tests.test_audit import build_history, rechain

KEY = parse_keys(TEST_AUDIT_KEY).signer
Found = tuple[list[str], int, int | None, int, int | None, int | None]


async def sql(core: Promptship, statement: str, **params: object) -> None:
    async with core.db.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def findings(db: Database, given: list[Checkpoint], **options: Any) -> Found:
    async with db.reader() as session:
        if options.pop("reference", False):
            found = await chainref.verify(session, given)
        else:
            found = await verification.verify(session, given, **options)
    # past the last problem reported, the reference walk stops counting unsigned events
    # and following the chain's end (nothing it finds is reported any more)
    capped = len(found.problems) > audit.MAX_PROBLEMS
    return (
        found.problems,
        found.checked,
        None if capped else found.unkeyed,
        found.checkpoints,
        found.newest_checkpoint,
        None if capped else found.end,
    )


async def same_as_reference(db: Database, given: Sequence[Checkpoint] = ()) -> list[str]:
    """What the reference walk finds, after checking that the fast scan finds the same in
    this process and in three worker processes."""
    reference = await findings(db, list(given), reference=True)
    assert await findings(db, list(given), workers=1) == reference
    assert await findings(db, list(given), workers=3, parallel_min=1) == reference
    return reference[0]


# -- every kind of tampering ----------------------------------------------------------------


async def untouched(core: Promptship) -> list[Checkpoint]:
    return []


async def edited_field(core: Promptship) -> list[Checkpoint]:
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = 4")
    return []


async def edited_details(core: Promptship) -> list[Checkpoint]:
    await sql(core, "UPDATE audit_events SET details = :d WHERE seq = 3", d='{"forged": true}')
    return []


async def respaced_details(core: Promptship) -> list[Checkpoint]:
    """The same JSON written with other spaces (and around it): not an edit."""
    async with core.db.reader() as session:
        stored = await session.scalar(text("SELECT details FROM audit_events WHERE seq = 3"))
    value = json.loads(stored) if isinstance(stored, str) else stored
    await sql(
        core,
        "UPDATE audit_events SET details = :d WHERE seq = 3",
        d=" " + json.dumps(value, indent=3) + "\n",
    )
    return []


async def edited_time(core: Promptship) -> list[Checkpoint]:
    """SQLite: the same instant in other text forms (not an edit), and one a microsecond
    later (an edit); PostgreSQL: a microsecond later, and infinity."""
    if core.db.is_sqlite:
        await sql(core, "UPDATE audit_events SET at = replace(at, ' ', 'T') WHERE seq = 2")
        await sql(core, "UPDATE audit_events SET at = substr(at, 1, 19) WHERE seq = 3")
        await sql(core, "UPDATE audit_events SET at = substr(at, 1, 25) || '1' WHERE seq = 6")
    else:  # and a time no datetime holds: the workers leave the scan to this process
        await sql(core, "UPDATE audit_events SET at = at + interval '1 microsecond' WHERE seq = 6")
        await sql(core, "UPDATE audit_events SET at = 'infinity' WHERE seq = 8")
    return []


async def rewritten_hash(core: Promptship) -> list[Checkpoint]:
    await sql(core, "UPDATE audit_events SET hash = :h WHERE seq = 5", h="f" * 64)
    return []


async def deleted_middle(core: Promptship) -> list[Checkpoint]:
    await sql(core, "DELETE FROM audit_events WHERE seq IN (5, 9, 10)")
    return []


async def deleted_newest(core: Promptship) -> list[Checkpoint]:
    await sql(core, "DELETE FROM audit_events WHERE seq > 12")
    return []


async def truncated_behind_a_checkpoint(core: Promptship) -> list[Checkpoint]:
    """The newest events deleted, the head moved back and the stored checkpoints deleted:
    only a kept copy of the checkpoints tells."""
    kept = await core.audit_checkpoints()
    made = await core.checkpoint_audit()
    assert made is not None
    await sql(core, "DELETE FROM audit_events WHERE seq > 8")
    await sql(
        core,
        "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit_events WHERE seq = 8)",
    )
    await sql(core, "DELETE FROM audit_checkpoints")
    return [*kept, made]


async def rechained_unkeyed(core: Promptship) -> list[Checkpoint]:
    await rechain(core, 4, lambda seq: None, actor="U66")
    return []


async def rechained_under_a_guessed_key(core: Promptship) -> list[Checkpoint]:
    guessed = parse_keys("test:" + "g" * 40).signer
    await rechain(core, 4, lambda seq: guessed, actor="U66")
    return []


async def rechained_in_sha256_keeping_the_key_id(core: Promptship) -> list[Checkpoint]:
    await rechain(core, 4, lambda seq: None, actor="U66")
    await sql(core, "UPDATE audit_events SET key_id = 'test' WHERE seq >= 4")
    return []


async def before_keyed_audit(core: Promptship) -> list[Checkpoint]:
    """The first five events as if written before keyed audit: they verify as SHA-256."""
    await rechain(core, 1, lambda seq: None if seq <= 5 else KEY)
    await sql(core, "DELETE FROM audit_checkpoints")
    return []


async def before_keyed_audit_and_edited(core: Promptship) -> list[Checkpoint]:
    await rechain(core, 1, lambda seq: None if seq <= 5 else KEY)
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq IN (2, 7)")
    return []


async def unsigned_in_the_middle(core: Promptship) -> list[Checkpoint]:
    await sql(core, "UPDATE audit_events SET key_id = NULL WHERE seq IN (6, 11)")
    return []


async def unlisted_key(core: Promptship) -> list[Checkpoint]:
    await sql(core, "UPDATE audit_events SET key_id = 'gone' WHERE seq IN (3, 4, 9)")
    await sql(core, "UPDATE audit_events SET key_id = 'lost' WHERE seq = 7")
    return []


async def forged_checkpoints(core: Promptship) -> list[Checkpoint]:
    (made,) = await core.audit_checkpoints()
    return [
        Checkpoint(made.seq + 2, made.hash, made.at, made.key_id, made.mac),
        Checkpoint(made.seq, "e" * 64, made.at, "other", made.mac),
    ]


async def rewritten_checkpointed_event(core: Promptship) -> list[Checkpoint]:
    (made,) = await core.audit_checkpoints()
    await sql(core, "UPDATE audit_events SET hash = prev_hash WHERE seq = :s", s=made.seq)
    return []


async def event_zero_inserted(core: Promptship) -> list[Checkpoint]:
    await sql(
        core,
        "INSERT INTO audit_events (seq, at, actor, action, prompt, version, environment,"
        " request_id, details, prev_hash, hash, key_id) SELECT 0, at, actor, action, prompt,"
        " version, environment, request_id, details, prev_hash, hash, key_id"
        " FROM audit_events WHERE seq = 1",
    )
    return []


async def every_event_edited(core: Promptship) -> list[Checkpoint]:
    """More problems than a verification reports: it stops after the first ones."""
    await sql(core, "UPDATE audit_events SET actor = 'U66'")
    await sql(core, "UPDATE audit_events SET key_id = NULL WHERE seq > 12")
    return []


TAMPERINGS: list[Callable[[Promptship], Awaitable[list[Checkpoint]]]] = [
    untouched,
    edited_field,
    edited_details,
    respaced_details,
    edited_time,
    rewritten_hash,
    deleted_middle,
    deleted_newest,
    truncated_behind_a_checkpoint,
    rechained_unkeyed,
    rechained_under_a_guessed_key,
    rechained_in_sha256_keeping_the_key_id,
    before_keyed_audit,
    before_keyed_audit_and_edited,
    unsigned_in_the_middle,
    unlisted_key,
    forged_checkpoints,
    rewritten_checkpointed_event,
    event_zero_inserted,
    every_event_edited,
]


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=lambda t: t.__name__)
async def test_the_fast_scan_finds_what_the_reference_walk_finds(
    core: Promptship, tampering: Callable[[Promptship], Awaitable[list[Checkpoint]]]
) -> None:
    await build_history(core)
    given = await tampering(core)
    problems = await same_as_reference(core.db, given)
    name = tampering.__name__
    if name in ("untouched", "respaced_details", "before_keyed_audit"):
        assert problems == []
    elif name == "edited_time" and core.db.is_sqlite:  # only the microsecond changed it
        assert problems == ["event 6 was edited: its content no longer matches its hash"]
    elif name == "every_event_edited":
        assert len(problems) == audit.MAX_PROBLEMS + 1
    else:
        assert problems


async def test_a_key_the_verifier_does_not_hold_is_named_once(
    core: Promptship, database_url: str
) -> None:
    await build_history(core)
    other = Database(database_url, audit_keys="other:" + "o" * 40)
    try:
        problems = await same_as_reference(other)
    finally:
        await other.dispose()
    assert problems[0] == (
        "the checkpoint of event 14 made 2026-01-01 09:00:00 UTC was signed with key 'test', "
        "which PROMPTSHIP_AUDIT_KEY does not list: add it to check this checkpoint"
    )
    assert problems[1:] == [
        "event 1 and others were signed with key 'test', which PROMPTSHIP_AUDIT_KEY does not "
        "list: add it to verify them"
    ]


# -- segments joined at every boundary ------------------------------------------------------

START = datetime(2026, 1, 1, 9, tzinfo=UTC)


def stamp(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def chain(length: int, unkeyed: int) -> list[list[Any]]:
    """Rows as SQLite holds them: the first ``unkeyed`` events plain SHA-256, then keyed."""
    rows, prev = [], audit.GENESIS
    for seq in range(1, length + 1):
        at = START + timedelta(seconds=seq, microseconds=seq % 2)
        details: dict[str, Any] = {"n": seq, "é": [seq, None, 1.5, "ü\n"]}
        key = None if seq <= unkeyed else KEY
        request_id = seq if seq % 3 else None
        environment = "production" if seq % 2 else None
        digest = audit.event_hash(
            seq=seq,
            at=at,
            actor="U01",
            action="deployment.changed",
            prompt="p",
            version="1.0.0",
            environment=environment,
            request_id=request_id,
            details=details,
            prev_hash=prev,
            key=key,
        )
        rows.append(
            [
                seq,
                stamp(at),
                "U01",
                "deployment.changed",
                "p",
                "1.0.0",
                environment,
                request_id,
                json.dumps(details),
                prev,
                digest,
                key.id if key else None,
            ]
        )
        prev = digest
    return rows


def orm_event(row: list[Any]) -> AuditEvent:
    seq, at, actor, action, prompt, version, environment, request_id, details, prev, h, key = row
    return AuditEvent(
        seq=seq,
        at=datetime.fromisoformat(at).replace(tzinfo=UTC),
        actor=actor,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details=json.loads(details),
        prev_hash=prev,
        hash=h,
        key_id=key,
    )


EDITS = st.sampled_from(["delete", "actor", "unsign", "unlisted", "hash", "details", "zero"])


@given(
    length=st.integers(1, 24),
    unkeyed=st.integers(0, 24),
    edits=st.lists(st.tuples(EDITS, st.integers(0, 23)), max_size=6),
    cuts=st.sets(st.integers(1, 25), max_size=6),
    anchored=st.sets(st.integers(-1, 26), max_size=3),
)
def test_segments_join_into_what_one_walk_finds(
    length: int,
    unkeyed: int,
    edits: list[tuple[str, int]],
    cuts: set[int],
    anchored: set[int],
) -> None:
    rows = chain(length, unkeyed)
    hashes = {row[0]: row[10] for row in rows}
    for edit, index in edits:
        if not rows:
            break
        row = rows[index % len(rows)]
        if edit == "delete":
            rows.remove(row)
        elif edit == "actor":
            row[2] = "U66"
        elif edit == "unsign":
            row[11] = None
        elif edit == "unlisted":
            row[11] = "gone"
        elif edit == "hash":
            row[10] = "f" * 64
        elif edit == "details":
            row[8] = '{"n": -1}'
        elif edit == "zero" and rows[0][0] != 0:
            rows.insert(0, [0, *row[1:]])
    checkpoints = {
        seq: [Checkpoint(seq, hashes.get(seq, "e" * 64), START, KEY.id, "")] for seq in anchored
    }
    keys = parse_keys(TEST_AUDIT_KEY)
    macs = {KEY.id: chainscan.hmac_sha256(KEY.secret)}
    by_seq = {s: [(c.hash, c.when) for c in found] for s, found in checkpoints.items()}

    reference = audit.Verification()
    walk = chainref._Walk(reference, keys, dict(checkpoints))
    for row in rows:
        walk.step(orm_event(row))

    head = AuditHead(id=1, seq=length, hash=hashes[length])
    results = []
    for bounds in ([], sorted(cuts)):
        result = audit.Verification()
        join = verification.Join(result, checkpoints, 1, audit.GENESIS, None)
        edges = [-1, *bounds, 10**6]
        for lo, hi in itertools.pairwise(edges):
            scanner = chainscan.Scanner(macs, by_seq)
            scanner.feed([row for row in rows if lo <= row[0] < hi])
            join.add(scanner.segment)
        assert (result.problems, result.checked) == (reference.problems, reference.checked)
        if len(reference.problems) < audit.MAX_PROBLEMS:
            assert result.unkeyed == reference.unkeyed
        join.end(head)
        results.append(result.problems)
    assert results[0] == results[1]


# -- the canonical bytes --------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
EVENT = st.fixed_dictionaries(
    {
        "seq": st.integers(1, 2**40),
        "at": st.datetimes(timezones=st.just(UTC)),
        "actor": st.text(),
        "action": st.text(),
        "prompt": st.none() | st.text(),
        "version": st.none() | st.text(),
        "environment": st.none() | st.text(),
        "request_id": st.none() | st.integers(-(2**40), 2**40),
        "details": st.dictionaries(st.text(), JSON, max_size=5),
        "prev_hash": st.text(),
        "key_id": st.none() | st.text(min_size=1),
    }
)


def postgres_text(at: datetime) -> str:
    """How PostgreSQL writes a time as text in UTC: the fraction's trailing zeros left out."""
    fraction = f".{at.microsecond:06d}".rstrip("0") if at.microsecond else ""
    return f"{at.year:04d}-{at.month:02d}-{at.day:02d} {at:%H:%M:%S}{fraction}+00"


def stored(event: dict[str, Any], store: str) -> list[Any]:
    """The event as each store gives it back: SQLite's text time and JSON as SQLAlchemy
    writes them; PostgreSQL's aware time (or its text, to a worker) and jsonb text."""
    at = {"sqlite": stamp, "postgres": lambda at: at, "postgres text": postgres_text}[store](
        event["at"]
    )
    details = json.dumps(event["details"], separators=(", ", ": ") if "postgres" in store else None)
    return [
        event["seq"],
        at,
        event["actor"],
        event["action"],
        event["prompt"],
        event["version"],
        event["environment"],
        event["request_id"],
        details,
        event["prev_hash"],
        "",
        event["key_id"],
    ]


def test_a_postgres_time_as_long_as_sqlites_is_read_as_postgres_writes_it() -> None:
    """``2000-01-01 00:00:00.001+00`` has the 26 characters of SQLite's form; it is a
    millisecond past midnight, not a fraction of ``.001+00``."""
    at = datetime(2000, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert chainscan.iso_time(postgres_text(at)) == at.isoformat()
    assert chainscan.iso_time(stamp(at)) == at.isoformat()


@given(event=EVENT, store=st.sampled_from(["sqlite", "postgres", "postgres text"]))
def test_the_fast_canonical_bytes_are_canonicals(event: dict[str, Any], store: str) -> None:
    expected = audit._canonical(**event)
    row = stored(event, store)
    assert chainscan.fast_body(row) == expected
    assert chainscan.exact_body(row) == expected


ODD = st.none() | st.text(max_size=30) | st.integers() | st.floats()
TIMES = st.sampled_from(
    [
        "2026-01-01 09:00:00.000000",
        "2026-01-01 09:00:00.000001",
        "2026-01-01T09:00:00.000000",
        "2026-01-01 09:00:00",
        "2026-01-01 09:00:00+01:00",
        "2026-13-01 09:00:00.000000",
        "2026-01-01 09:00:00.0000001",
        "2026-01-01x09:00:00.000000",
        "2026-01-01 09:00:00+00",
        "2026-01-01 09:00:00.5+00",
        "2026-01-01 09:00:00.000000+00",
        "2026-01-01 09:00:00.+00",
        "2026-01-01 09:00:00.1234567+00",
        "2026-01-01 09:00:00.٣+00",
        "2026-01-01 09:00:00+01",
        "infinity",
    ]
)
DETAILS = st.sampled_from(['{"n": 1}', ' {"n": 1}', '{"n": 1} ', "[1, 2]", "null", "{", "1 2"])


@given(
    row=st.tuples(
        st.integers(0, 99), TIMES | ODD, ODD, ODD, ODD, ODD, ODD, ODD, DETAILS | ODD, ODD
    ),
    key_id=st.none() | st.just("k1"),
)
def test_the_fast_bytes_are_the_orms_or_none(row: tuple[Any, ...], key_id: str | None) -> None:
    """Whatever a column holds, the fast bytes are the ORM's or are not built at all."""
    full = [*row, "", key_id]
    try:
        exact = chainscan.exact_body(full)
    except (TypeError, ValueError, AttributeError):
        exact = None
    try:
        fast = chainscan.fast_body(full)
    except (TypeError, ValueError, AttributeError, StopIteration):
        return
    assert fast == exact


@given(secret=st.binary(max_size=100), message=st.binary(max_size=300))
def test_the_precomputed_hmac_is_hmac_sha256(secret: bytes, message: bytes) -> None:
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    assert chainscan.hmac_sha256(secret)(message) == expected


async def test_workers_that_cannot_start_leave_the_scan_to_this_process(
    core: Promptship, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await build_history(core)
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = 4")
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    found = await findings(core.db, [], workers=2, parallel_min=1)
    assert found[0] == ["event 4 was edited: its content no longer matches its hash"]
    assert "an audit scan worker could not start" in caplog.text
