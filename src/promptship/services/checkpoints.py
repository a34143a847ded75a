"""Signed checkpoints of the audit chain: (seq, head hash, time, key id) and an HMAC over
them, kept in ``audit_checkpoints`` and posted to the policy channel through the outbox.

Copies outside the database (the channel's history, a file written by ``promptship audit
checkpoints``) are what catch deleting the newest events and moving ``audit_head`` back:
verification fails when a checkpoint names an event past the chain's end, or a hash the
event at its seq no longer has. A checkpoint's own MAC shows whether it is genuine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import ENV_VAR, AuditKey, AuditKeys
from promptship.domain.safe_load import load_json
from promptship.errors import BadInput
from promptship.services import audit, outbox, registry
from promptship.services.deps import Deps
from promptship.store.models import AuditCheckpoint, AuditHead, JobClaim

TOPIC = "audit.checkpoint"
LINE_PREFIX = "promptship-checkpoint"
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_LINE = re.compile(
    LINE_PREFIX + r" seq=(?P<seq>\d{1,18}) hash=(?P<hash>[0-9a-f]{64}) at=(?P<at>\S{1,40})"
    r" key=(?P<key>[A-Za-z0-9_.-]{1,32}) mac=(?P<mac>[0-9a-f]{64})"
)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_TIME)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME).replace(tzinfo=UTC)


def checkpoint_mac(key: AuditKey, seq: int, head_hash: str, at: datetime) -> str:
    """The HMAC over what a checkpoint asserts (its own domain, apart from event hashes)."""
    return key.mac(f"{LINE_PREFIX}|{seq}|{head_hash}|{_stamp(at)}|{key.id}".encode())


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: datetime
    key_id: str
    mac: str
    reason: str = ""

    @property
    def when(self) -> str:
        return self.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def line(self) -> str:
        """One machine-readable line (posted to the channel, and read back from it)."""
        return (
            f"{LINE_PREFIX} seq={self.seq} hash={self.hash} at={_stamp(self.at)} "
            f"key={self.key_id} mac={self.mac}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": _stamp(self.at),
            "key": self.key_id,
            "mac": self.mac,
            "reason": self.reason,
        }

    @property
    def identity(self) -> tuple[int, str, str, str, str]:
        return (self.seq, self.hash, _stamp(self.at), self.key_id, self.mac)


def find_line(text: str) -> Checkpoint | None:
    """The checkpoint in a message's text, if it carries one."""
    match = _LINE.search(text)
    if match is None:
        return None
    try:
        at = _parse_time(match["at"])
    except ValueError:
        return None
    return Checkpoint(int(match["seq"]), match["hash"], at, match["key"], match["mac"])


def from_json(raw: Any) -> Checkpoint:
    """A checkpoint from its JSON form (``Checkpoint.as_json``); ValueError if it is not one."""
    try:
        return Checkpoint(
            seq=int(raw["seq"]),
            hash=str(raw["hash"]),
            at=_parse_time(str(raw["at"])),
            key_id=str(raw["key"]),
            mac=str(raw["mac"]),
            reason=str(raw.get("reason") or ""),
        )
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a checkpoint: {exc}") from None


def parse_file(text: str, source: str) -> list[Checkpoint]:
    """Checkpoints from JSON lines (as ``audit checkpoints --output`` writes them), a JSON
    array (``--json``) or ``promptship-checkpoint …`` lines; anything else is refused,
    naming the line."""
    if text.lstrip().startswith("["):
        try:
            return [from_json(raw) for raw in load_json(text, source)]
        except (ValueError, BadInput):
            raise BadInput(
                f"{source}: not a list of checkpoints",
                hint="use the output of promptship audit checkpoints --json",
            ) from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        checkpoint = find_line(line) if line.startswith(LINE_PREFIX) else None
        if checkpoint is None:
            try:
                checkpoint = from_json(load_json(line, f"{source}:{number}"))
            except (ValueError, BadInput):
                raise BadInput(
                    f"{source}:{number}: not a checkpoint",
                    hint='each line is JSON {"seq", "hash", "at", "key", "mac"} as written by '
                    "promptship audit checkpoints --json",
                ) from None
        found.append(checkpoint)
    return found


def _from_row(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.seq, row.hash, row.at, row.key_id, row.mac, row.reason)


async def stored(session: AsyncSession, limit: int | None = None) -> list[Checkpoint]:
    """The checkpoints in the database, oldest first (the newest ``limit`` of them)."""
    query = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = (await session.execute(query)).scalars().all()
    return [_from_row(row) for row in reversed(rows)]


def merge(*groups: Iterable[Checkpoint]) -> list[Checkpoint]:
    seen: dict[tuple[int, str, str, str, str], Checkpoint] = {}
    for group in groups:
        for checkpoint in group:
            seen.setdefault(checkpoint.identity, checkpoint)
    return list(seen.values())


def usable(
    checkpoints: Sequence[Checkpoint], keys: AuditKeys | None, result: audit.Verification
) -> dict[int, list[Checkpoint]]:
    """The genuine checkpoints by seq; forged ones and ones under unlisted keys are problems."""
    by_seq: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        key = keys.get(checkpoint.key_id) if keys else None
        if key is None:
            result.add(
                f"the checkpoint of event {checkpoint.seq} made {checkpoint.when} was signed "
                f"with key {checkpoint.key_id!r}, which {ENV_VAR} does not list: "
                "add it to check this checkpoint"
            )
        elif checkpoint_mac(key, checkpoint.seq, checkpoint.hash, checkpoint.at) != checkpoint.mac:
            result.add(
                f"the checkpoint of event {checkpoint.seq} said to be made {checkpoint.when} is "
                f"forged: its MAC does not match key {checkpoint.key_id!r}"
            )
        else:
            by_seq.setdefault(checkpoint.seq, []).append(checkpoint)
            result.checkpoints += 1
            result.newest_checkpoint = max(result.newest_checkpoint or 0, checkpoint.seq)
    return by_seq


async def make(session: AsyncSession, deps: Deps, reason: str) -> Checkpoint | None:
    """Sign the chain's head as it is in this transaction, store the checkpoint and queue it
    for the policy channel. None while the log is empty."""
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    if head.seq == 0:
        return None
    reason = reason[:64]
    key = audit.keyring(session).signer()
    at = deps.clock.now()
    checkpoint = Checkpoint(
        head.seq, head.hash, at, key.id, checkpoint_mac(key, head.seq, head.hash, at), reason
    )
    session.add(
        AuditCheckpoint(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            at=at,
            key_id=key.id,
            mac=checkpoint.mac,
            reason=reason,
        )
    )
    await session.flush()
    await outbox.enqueue(
        session, deps.clock, TOPIC, checkpoint.as_json(), channel=deps.policy.channel
    )
    return checkpoint


async def scheduled(session: AsyncSession, deps: Deps, tick: str, owner: str) -> Checkpoint | None:
    """The periodic checkpoint: claimed once across replicas by its tick key, and skipped
    when nothing was recorded since the newest checkpoint."""
    now = deps.clock.now()
    claimed = await session.execute(
        registry.dialect_insert(session)(JobClaim)
        .values(key=tick, owner=owner, lease_until=now, claimed_at=now, done_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    newest = await stored(session, limit=1)
    head_seq = (await session.execute(select(AuditHead.seq).where(AuditHead.id == 1))).scalar_one()
    if newest and newest[-1].seq == head_seq:
        return None
    return await make(session, deps, "scheduled")
