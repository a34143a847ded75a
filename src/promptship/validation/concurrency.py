"""Adaptive concurrency for model calls: additive increase, multiplicative decrease (AIMD).

A run starts with as many calls in flight as its ``concurrency`` setting allows, the
ceiling. Pressure from the provider halves that window (never below 1):

- a 429: besides, no new call starts before its ``retry-after`` has passed (a call whose
  time would run out first fails at once with the 429, and holds the others no longer);
- a 529 or 503 (overloaded);
- a response whose rate-limit headers (Anthropic's ``anthropic-ratelimit-requests-*`` and
  ``-tokens-*``) say the limit is nearly spent (a tenth or less left).

While those headers say a limit runs low (less left than a full window of calls would
take), new calls are also spaced out so that what is left lasts until the limit is full
again (its ``-reset``): the run slows down before a 429 rather than after one, and the
spacing ends when a response shows room again.

A window's worth of successes (as many as the window is wide) widens it by one, back up to
the ceiling. Calls refused together are one event: only a call started since the last cut
cuts again, so a burst of 429s halves the window once, not down to 1.

The runner and the soak cycle hold a slot around each model call (``async with limiter:``).
The provider finds that slot (:func:`current_lease`), makes its retries through it and says
what each attempt was told: a retry gives the slot up while it waits and takes the next
free one ahead of calls not yet started. A provider used outside a limiter gets a lease
that limits nothing and only waits between retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")

#: statuses that mean "slow down": the window is cut
PRESSURE = frozenset({429, 503, 529})
#: a limit is nearly spent when less than this share of it is left
LOW_SHARE = 0.1
#: the longest a rate limit holds every call back (``retry-after``, or the spacing
#: that ``-reset`` asks for): a header naming an hour does not stall a run for an hour
MAX_HOLD = 60.0
_INITIAL_BACKOFF, _MAX_BACKOFF = 0.5, 8.0


class Timer(Protocol):
    """Where the limiter reads the time and waits (tests move it by hand)."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicTimer:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Budget:
    """What a response's rate-limit headers say of one limit: its size, what is left of it,
    and in how many seconds it is full again. ``kind`` is ``requests`` (one a call) or
    ``tokens`` (what calls have cost on average)."""

    kind: str
    limit: float
    remaining: float
    reset_in: float


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``retry-after`` in seconds
    or as an HTTP date; None when it names none."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an error response is worth another attempt, as the provider SDKs decide:
    the server's ``x-should-retry`` when it says, else 408, 409, 429 and any 5xx."""
    should = headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return status in (408, 409, 429) or status >= 500


def backoff(retries_taken: int) -> float:
    """The wait before a retry when the server names none: 0.5 s doubling up to 8 s, less
    up to a quarter at random (the provider SDKs' own schedule)."""
    delay = min(_INITIAL_BACKOFF * 2.0**retries_taken, _MAX_BACKOFF)
    return delay * (1 - 0.25 * random.random())


@dataclass(frozen=True)
class Refused:
    """Why an attempt got no answer: its status (None: no response, the connection
    failed), the response's headers and the rate-limit budgets they report."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    budgets: Sequence[Budget] = ()


class WaitTooLong(Exception):
    """The provider asked for a wait longer than the call has left: the call fails at once
    with the provider's refusal rather than sleep into its timeout."""

    def __init__(self, status: int | None, wait: float, left: float) -> None:
        self.status, self.wait, self.left = status, wait, max(left, 0.0)
        refused = (
            "rate limited by the provider (429)"
            if status == 429
            else (f"the provider answered {status}")
        )
        super().__init__(
            f"{refused} and asked to wait {wait:g}s, more than the {self.left:.1f}s the call "
            "had left"
        )


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    lease: Lease,
    max_retries: int,
    refused: Callable[[Exception], Refused | None],
    deadline: float | None = None,
) -> T:
    """``attempt()``'s answer, retried up to ``max_retries`` times through ``lease`` when
    ``refused`` reads its error as worth a retry (a connection failure, or a status
    :func:`retryable` allows); the last error otherwise. The attempt reports its own
    success to the lease (it has the response's headers). ``deadline`` (the event loop's
    time, as ``asyncio.Timeout.when()``) is when the call gives up: a wait the provider
    asks for past it raises :class:`WaitTooLong` at once."""
    retries_taken = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            why = refused(exc)
            if (
                why is None
                or retries_taken >= max_retries
                or (why.status is not None and not retryable(why.status, why.headers))
            ):
                raise
            wait = retry_after(why.headers)
            if wait is not None and deadline is not None:
                left = deadline - asyncio.get_running_loop().time()
                if wait > left:
                    lease.refused(status=why.status, wait=wait, budgets=why.budgets)
                    raise WaitTooLong(why.status, wait, left) from exc
        await lease.retry(retries_taken, status=why.status, wait=wait, budgets=why.budgets)
        retries_taken += 1


_LEASE: ContextVar[Lease | None] = ContextVar("promptship_lease", default=None)
_UNLIMITED = MonotonicTimer()


def current_lease() -> Lease:
    """The slot the calling task holds (``async with limiter:``), or a lease that limits
    nothing when it holds none."""
    return _LEASE.get() or Lease(None)


class Lease:
    """One model call's slot in a limiter: what the call's attempts report through."""

    def __init__(self, limiter: AdaptiveLimiter | None) -> None:
        self._limiter = limiter
        self.epoch = 0
        self.held = False
        self._token: Token[Lease | None] | None = None

    def succeeded(self, budgets: Sequence[Budget] = (), tokens: int | None = None) -> None:
        """The attempt was answered; ``budgets`` from its rate-limit headers, ``tokens``
        what it cost."""
        if self._limiter is not None:
            self._limiter._succeeded(self, budgets, tokens)

    def refused(self, *, status: int | None, wait: float, budgets: Sequence[Budget] = ()) -> None:
        """The attempt was refused and the call gives up without waiting ``wait`` seconds:
        the limiter still hears of it (a 429 holds later calls back for that wait, no
        longer)."""
        if self._limiter is not None and self._limiter.adaptive:
            self._limiter._refused(self, status, min(wait, MAX_HOLD), budgets)

    async def retry(
        self,
        retries_taken: int,
        *,
        status: int | None,
        wait: float | None = None,
        budgets: Sequence[Budget] = (),
    ) -> None:
        """Wait before the call's next attempt, after one refused with ``status`` (None: no
        response, e.g. the connection failed) naming ``wait`` seconds (``retry-after``),
        or the backoff when it names none."""
        delay = wait if wait is not None else backoff(retries_taken)
        limiter = self._limiter
        if limiter is None or not limiter.adaptive:  # the slot, if any, is kept meanwhile
            await (limiter.timer if limiter else _UNLIMITED).sleep(delay)
            return
        await limiter._retry(self, status, min(delay, MAX_HOLD), budgets)


class _Ticket:
    """A call's place in a limiter's line, and how it is told to look again."""

    __slots__ = ("turn",)

    def __init__(self) -> None:
        self.turn: asyncio.Future[None] | None = None


class AdaptiveLimiter:
    """At most ``limit`` calls in flight, ``limit`` moving between 1 and ``ceiling``.

    Safe for any number of tasks of one event loop. A task cancelled while it waits leaves
    no slot taken and hands on any slot it was woken for. ``adaptive=False`` keeps the
    window at the ceiling and lets every call wait out its own retries in its slot: fixed
    concurrency, as a semaphore around the SDK's retries gave (the benchmarks' baseline).
    """

    def __init__(self, ceiling: int, *, adaptive: bool = True, timer: Timer | None = None) -> None:
        if ceiling < 1:
            raise ValueError("a limiter's ceiling is at least 1")
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.timer: Timer = timer or MonotonicTimer()
        self._limit = ceiling
        self._in_flight = 0
        #: the calls waiting to start, in the order they start
        self._line: deque[_Ticket] = deque()
        #: bumped at each cut: a lease taken before it does not cut again
        self._epoch = 0
        self._successes = 0
        #: no call starts before this (a 429's retry-after)
        self._hold_until = 0.0
        #: seconds between starts while a limit is nearly spent (0: not spacing)
        self._spacing = 0.0
        self._last_start = -math.inf
        #: what a call has cost in tokens, on average (for ``tokens`` budgets)
        self._tokens_per_call: float | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> Lease:
        lease = Lease(self)
        await self._acquire(lease)
        lease._token = _LEASE.set(lease)
        return lease

    async def __aexit__(self, *exc: object) -> None:
        lease = _LEASE.get()
        assert lease is not None and lease._token is not None
        _LEASE.reset(lease._token)
        self._release(lease)

    # -- slots ---------------------------------------------------------------------------

    async def _acquire(self, lease: Lease, *, ahead: bool = False) -> None:
        """Take a slot, in line: calls start in the order they asked, a retry (``ahead``)
        before every call waiting for its first slot. Only the call at the front of the
        line watches the clock (a hold, or spacing between starts) and the free slots;
        the others wait until it has started, so a retry is never overtaken and a line of
        hundreds costs one wake-up a start."""
        ticket = _Ticket()
        if ahead:
            self._line.appendleft(ticket)
        else:
            self._line.append(ticket)
        loop = asyncio.get_running_loop()
        try:
            while True:
                delay: float | None = None
                if self._line[0] is ticket and self._in_flight < self._limit:
                    now = self.timer.now()
                    delay = max(self._hold_until, self._last_start + self._spacing) - now
                    if delay <= 0:
                        self._line.popleft()
                        self._in_flight += 1
                        self._last_start = now
                        lease.epoch, lease.held = self._epoch, True
                        self._wake()  # the next in line may have a slot too
                        return
                ticket.turn = loop.create_future()
                if delay is None:
                    await ticket.turn
                    continue
                # first in line, held back by the clock alone: until then, or until told
                # to look again (the spacing shrank as a response showed room)
                clock = asyncio.ensure_future(self.timer.sleep(delay))
                try:
                    await asyncio.wait((ticket.turn, clock), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    clock.cancel()
        except BaseException:
            was_first = bool(self._line) and self._line[0] is ticket
            if ticket in self._line:
                self._line.remove(ticket)
            if was_first:
                self._wake()  # the next in line takes over
            raise

    def _release(self, lease: Lease) -> None:
        if lease.held:
            lease.held = False
            self._in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        """Tell the call at the front of the line to look again: a slot is free, or it has
        just become first."""
        if self._line:
            turn = self._line[0].turn
            if turn is not None and not turn.done():
                turn.set_result(None)

    # -- what calls report ---------------------------------------------------------------

    def _cut(self, lease: Lease) -> None:
        if lease.epoch != self._epoch:
            return  # the window was cut since this call started: one event, one cut
        self._epoch += 1
        self._limit = max(1, self._limit // 2)
        self._successes = 0

    def _succeeded(self, lease: Lease, budgets: Sequence[Budget], tokens: int | None) -> None:
        if not self.adaptive:
            return
        if tokens:
            last = self._tokens_per_call
            self._tokens_per_call = tokens if last is None else 0.8 * last + 0.2 * tokens
        if self._space(budgets):  # cut before the limit is spent and calls get 429s
            self._cut(lease)
            return
        if lease.epoch != self._epoch:
            return  # started before the last cut: says nothing of the window now
        self._successes += 1
        if self._successes >= self._limit and self._limit < self.ceiling:
            self._limit += 1
            self._successes = 0
            self._wake()

    def _refused(
        self, lease: Lease, status: int | None, delay: float, budgets: Sequence[Budget]
    ) -> None:
        if status in PRESSURE:
            self._cut(lease)
        self._space(budgets)
        if status == 429:  # nobody starts before the retry-after has passed
            self._hold_until = max(self._hold_until, self.timer.now() + delay)

    async def _retry(
        self, lease: Lease, status: int | None, delay: float, budgets: Sequence[Budget]
    ) -> None:
        self._refused(lease, status, delay, budgets)
        self._release(lease)
        if status != 429:  # only this call waits
            await self.timer.sleep(delay)
        await self._acquire(lease, ahead=True)

    def _space(self, budgets: Sequence[Budget]) -> bool:
        """Space starts out while a budget runs low; True when one is nearly spent.

        Running low: no more is left than a full window of calls would take. Starts are
        then spaced so that what is left lasts until the limit is full again (its
        ``-reset``): ``cost * reset_in / remaining`` apart. That spacing slows the run as
        the budget shrinks and quickens it as the budget refills, settling where starts
        match the refill rate with half the budget left, so neither a refill rate read
        from rounded headers nor a late response makes the run overrun the limit. Nearly
        spent: a tenth or less is left, or not enough for one more call."""
        spacing, spent = 0.0, False
        for budget in budgets:
            cost = 1.0 if budget.kind == "requests" else self._tokens_per_call
            if cost is None or budget.limit <= 0:
                continue
            remaining = max(budget.remaining, 0.0)
            spent = spent or remaining < cost or remaining <= budget.limit * LOW_SHARE
            if remaining <= self._limit * cost and budget.reset_in > 0:
                wait = cost * budget.reset_in / max(remaining, cost)
                spacing = max(spacing, min(wait, MAX_HOLD))
        if spacing < self._spacing:
            self._wake()  # the call first in line may start sooner than it was told
        self._spacing = spacing
        return spent
