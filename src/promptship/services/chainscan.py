"""The audit chain checked at disk speed: events read as plain rows (no ORM objects), each
event's canonical bytes built straight from its columns and hashed in one tight loop.

A ``Scanner`` walks one range of sequence numbers and reports a ``Segment``: what it found
inside the range, and the range's first and last events, so that ranges scanned apart (in
worker processes, ``chainworker``) join into exactly what one walk over the whole chain
finds (``promptship.services.verification`` joins them).

The bytes hashed are built the fast way first (``fast_body``). When an event's hash does
not match them, they are built again exactly as the ORM reads the row (``exact_body``, the
conversions SQLAlchemy and ``UTCDateTime`` make, then ``canonical``), and only that decides.
The fast way can therefore never hide an edit: its bytes equal an event's signed bytes only
when the row holds exactly what was signed.

Only the standard library is imported here: worker processes load this module.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

GENESIS = "0" * 64
#: the problems a verification reports before it stops
MAX_PROBLEMS = 20
#: entries each list of a segment keeps: one more than a verification reports, so that
#: joining segments never misses one that would have been reported
KEEP = MAX_PROBLEMS + 1
#: rows read per query (keyset pages on seq)
PAGE = 20_000
#: the columns a scan reads, in this order (``details`` as JSON text on both stores)
COLUMNS = (
    "seq, {at}, actor, action, prompt, version, environment, request_id, {details}, prev_hash, "
    "hash, key_id"
)

Mac = Callable[[bytes], str]
#: the problem kinds, in the order one event's problems are reported
GAP, LINK, CONTENT, ANCHOR = range(4)


def canonical(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    prompt: str | None,
    version: str | None,
    environment: str | None,
    request_id: int | None,
    details: dict[str, Any],
    prev_hash: str,
    key_id: str | None = None,
) -> bytes:
    """The bytes an event's hash covers: its fields as sorted, compact JSON."""
    body = {
        "seq": seq,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "prompt": prompt,
        "version": version,
        "environment": environment,
        "request_id": request_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    if key_id is not None:  # unkeyed (pre-0007) events keep the body they were hashed with
        body["key_id"] = key_id
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def select_sql(dialect: str, lo: str, hi: str, limit: str, time_text: bool = False) -> str:
    """One keyset page of events with seq in [lo, hi], in seq order (placeholders given).
    ``time_text``: PostgreSQL's ``at`` as text, for a session in UTC with ISO dates (its
    text costs a fraction of a datetime's)."""
    postgres = dialect != "sqlite"
    columns = COLUMNS.format(
        at="at::text" if postgres and time_text else "at",
        details="details::text" if postgres else "details",
    )
    return (
        f"SELECT {columns} FROM audit_events "
        f"WHERE seq >= {lo} AND seq <= {hi} ORDER BY seq LIMIT {limit}"
    )


def _unserializable(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json_functions() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[Any], str]]:
    """The C scanner and encoder behind json.loads and json.dumps, called directly: the
    whitespace checks of one and the encoder set-up of the other cost more than the work
    itself on small values."""
    decoder: Any = json.JSONDecoder()  # json.loads's defaults
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # no C accelerator: json.dumps's own way
        encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return scan, encoder.encode
    # json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)'s arguments
    chunks = make_encoder(
        None, _unserializable, encode_basestring, None, ":", ",", True, False, True
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return scan, encode


_scan_json, _encode_json = _json_functions()


def canonical_details(text: str) -> str:
    """``details`` JSON text as ``canonical`` writes it (sorted, compact, unescaped): the
    text must hold one JSON value and nothing else, not even spaces around it (else
    ValueError)."""
    value, end = _scan_json(text, 0)  # StopIteration where no value starts
    if end != len(text):
        raise ValueError("more than one JSON value")
    return _encode_json(value)


def iso_time(text: str) -> str:
    """``isoformat()`` of the UTC time ``text`` holds: SQLAlchemy's SQLite form
    ``YYYY-MM-DD HH:MM:SS.ffffff``, or PostgreSQL's text in UTC ``YYYY-MM-DD HH:MM:SS[.f]+00``
    (the fraction's trailing zeros left out). ValueError for any other form: each accepted
    one reads with ``datetime.fromisoformat`` as the time written here."""
    if len(text) == 26 and text[10] == " " and text[19] == "." and text[20:].isdigit():
        fraction = "" if text.endswith(".000000") else text[19:]
    elif text[10:11] == " " and text.endswith("+00") and text.isascii():
        fraction = text[19:-3]
        if fraction and not (
            2 <= len(fraction) <= 7 and fraction[0] == "." and fraction[1:].isdigit()
        ):
            raise ValueError("not a form of a UTC time")
        fraction = fraction.ljust(7, "0") if fraction else ""
    else:
        raise ValueError("not a form of a UTC time")
    return f"{text[:10]}T{text[11:19]}{fraction}+00:00"


def fast_body(row: Sequence[Any]) -> bytes:
    """``canonical`` of a row (``COLUMNS``) built without a dict per event: the same bytes
    for every row the services write. Raises TypeError, ValueError or StopIteration where a
    value is not of the shape they write (a number in a text column, a time in another
    form, JSON text with spaces around it)."""
    (
        seq,
        at,
        actor,
        action,
        prompt,
        version,
        environment,
        request_id,
        details,
        prev_hash,
        _,
        key_id,
    ) = row
    at = iso_time(at) if type(at) is str else at.isoformat()  # else an aware datetime
    key = "" if key_id is None else f',"key_id":{encode_basestring(key_id)}'
    environment = "null" if environment is None else encode_basestring(environment)
    prompt = "null" if prompt is None else encode_basestring(prompt)
    version = "null" if version is None else encode_basestring(version)
    request = "null" if request_id is None else int.__repr__(request_id)
    return (
        f'{{"action":{encode_basestring(action)},"actor":{encode_basestring(actor)},'
        f'"at":"{at}","details":{canonical_details(details)},"environment":{environment}{key},'
        f'"prev_hash":{encode_basestring(prev_hash)},"prompt":{prompt},"request_id":{request},'
        f'"seq":{int.__repr__(seq)},"version":{version}}}'
    ).encode()


def exact_body(row: Sequence[Any]) -> bytes:
    """``canonical`` of a row as the ORM reads it: SQLAlchemy parses a SQLite time with
    ``datetime.fromisoformat`` (a worker's PostgreSQL time text reads the same way as the
    driver's datetime) and JSON text with ``json.loads``; ``UTCDateTime`` makes the time
    UTC. Raises what the ORM would raise on the row; a PostgreSQL time no datetime holds
    (infinity, before year 1) raises here, and the range is then scanned again in the
    verifying process, through the ORM's own driver."""
    (
        seq,
        at,
        actor,
        action,
        prompt,
        version,
        environment,
        request_id,
        details,
        prev_hash,
        _,
        key_id,
    ) = row
    if type(at) is str:
        at = datetime.fromisoformat(at)
    if at is not None:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return canonical(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details=None if details is None else json.loads(details),  # type: ignore[arg-type]
        prev_hash=prev_hash,
        key_id=key_id,
    )


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def hmac_sha256(secret: bytes) -> Mac:
    """HMAC-SHA256 under ``secret`` (RFC 2104, as ``hmac.new``) with the padded key's
    inner and outer states hashed once: each message then costs two state copies."""
    block = (hashlib.sha256(secret).digest() if len(secret) > 64 else secret).ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def mac(message: bytes) -> str:
        digest = inner.copy()
        digest.update(message)
        signed = outer.copy()
        signed.update(digest.digest())
        return signed.hexdigest()

    return mac


def missing(expected: int, seq: int) -> str:
    if seq > expected:
        return f"events {expected}..{seq - 1} are missing (deleted?)"
    return f"event {seq} is out of order"


def unlinked(seq: int) -> str:
    return f"event {seq} does not follow the event before it"


def edited(seq: int) -> str:
    return f"event {seq} was edited: its content no longer matches its hash"


def unsigned(seq: int, keyed_since: int) -> str:
    return (
        f"event {seq} is not signed although event {keyed_since} before it was: it was "
        "written around the key (tampering)"
    )


@dataclass
class Segment:
    """What scanning one range of seq found. The range's first event is not linked to the
    one before it here (``first``: its seq and prev_hash), nor are its unsigned events
    judged: whether one is tampering depends on the events before the range."""

    first: tuple[int, str] | None = None
    last: tuple[int, str] | None = None  # seq and hash
    checked: int = 0
    unkeyed: int = 0
    #: the first signed event's seq as the walk remembers it (``keyed or seq``)
    keyed: int | None = None
    #: (seq, kind, message), in walk order; kind orders one event's problems
    problems: list[tuple[int, int, str]] = field(default_factory=list)
    #: key id -> the first event signed with it, for keys not listed
    missing_keys: dict[str, int] = field(default_factory=dict)
    #: unsigned events before the range's first signed one; of those, the ones whose
    #: SHA-256 does not hold; unsigned events after a signed one, with ``keyed`` then
    unsigned_first: list[int] = field(default_factory=list)
    sha_edited: list[int] = field(default_factory=list)
    unsigned_after: list[tuple[int, int]] = field(default_factory=list)
    #: the checkpointed seqs the range holds
    anchored: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Segment:
        def pair(value: list[Any] | None) -> tuple[int, str] | None:
            return None if value is None else (value[0], value[1])

        return cls(
            first=pair(raw["first"]),
            last=pair(raw["last"]),
            checked=raw["checked"],
            unkeyed=raw["unkeyed"],
            keyed=raw["keyed"],
            problems=[(s, k, m) for s, k, m in raw["problems"]],
            missing_keys=raw["missing_keys"],
            unsigned_first=raw["unsigned_first"],
            sha_edited=raw["sha_edited"],
            unsigned_after=[(s, k) for s, k in raw["unsigned_after"]],
            anchored=raw["anchored"],
        )


class Scanner:
    """One range's events in seq order, fed a page of rows (``COLUMNS``) at a time.
    ``anchors``: seq -> (hash, when made) of each genuine checkpoint in the range."""

    def __init__(
        self,
        macs: dict[str, Mac],
        anchors: dict[int, list[tuple[str, str]]],
    ) -> None:
        self.segment = Segment()
        self._macs, self._anchors = macs, anchors
        self._expected: int | None = None
        self._prev = ""

    def _holds(self, row: Sequence[Any], mac: Mac) -> bool:
        try:
            if mac(fast_body(row)) == row[10]:
                return True
        except (TypeError, ValueError, AttributeError, StopIteration):
            pass
        return bool(mac(exact_body(row)) == row[10])

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        seg = self.segment
        problems, unsigned_first, sha_edited = seg.problems, seg.unsigned_first, seg.sha_edited
        expected, prev, keyed = self._expected, self._prev, seg.keyed
        macs, anchors, holds = self._macs, self._anchors, self._holds
        checked = unkeyed = 0
        for row in rows:
            seq, prev_hash, digest, key_id = row[0], row[9], row[10], row[11]
            checked += 1
            if expected is None:
                seg.first = (seq, prev_hash)
            else:
                if seq != expected and len(problems) < KEEP:
                    problems.append((seq, GAP, missing(expected, seq)))
                if prev_hash != prev and len(problems) < KEEP:
                    problems.append((seq, LINK, unlinked(seq)))
            if key_id is None:
                unkeyed += 1
                if keyed is None:
                    if len(unsigned_first) < KEEP:
                        unsigned_first.append(seq)
                    if len(sha_edited) < KEEP and not holds(row, sha256_hex):
                        sha_edited.append(seq)
                elif len(seg.unsigned_after) < KEEP:
                    seg.unsigned_after.append((seq, keyed))
            else:
                keyed = keyed or seq
                mac = macs.get(key_id)
                if mac is None:
                    seg.missing_keys.setdefault(key_id, seq)
                elif len(problems) < KEEP and not holds(row, mac):
                    problems.append((seq, CONTENT, edited(seq)))
            if anchors and seq in anchors:
                seg.anchored.append(seq)
                for anchor_hash, when in anchors[seq]:
                    if anchor_hash != digest and len(problems) < KEEP:
                        problems.append(
                            (
                                seq,
                                ANCHOR,
                                f"event {seq} differs from the checkpoint made {when}: the log "
                                "was rewritten since",
                            )
                        )
            expected, prev = seq + 1, digest
        if expected is not None:
            seg.last = (expected - 1, prev)
        seg.checked += checked
        seg.unkeyed += unkeyed
        seg.keyed = keyed
        self._expected, self._prev = expected, prev
