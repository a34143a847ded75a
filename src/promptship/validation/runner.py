"""Runs a version's suite against its model: concurrent under a limit, scored in batches,
heart-beating so a dead worker's run is found, cancellable, and recorded through the core.

Cases that share an input and vars share one call: each checks the same answer, as promptfoo
checks every assert of a test against one output (an imported test with three asserts costs
one call, not three); the call's tokens are counted with the first of them. A case that gets
no answer (provider down, retries exhausted, timeout) is ``errored``, never
``passed``; errored cases count against the pass rate and are reported apart from assertion
failures.

A runner keeps the providers it opens (their HTTP connections) from run to run, as a
server's worker runs one queued run after another, and closes them in :meth:`aclose` (or
at the end of ``async with SuiteRunner(...)``): back-to-back runs skip the connection set-up
(and, against a real API, the TLS handshakes) their first calls would otherwise wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from promptship.domain.identity import Actor, Via
from promptship.domain.lifecycle import RunState
from promptship.domain.promptfile import AssertionType, TestCase, case_identity
from promptship.domain.template import render_prompt, resolve
from promptship.errors import BadInput, reason
from promptship.services import Promptship
from promptship.services.views import RunView
from promptship.validation.assertions import AssertionResult, check_many, check_text
from promptship.validation.concurrency import AdaptiveLimiter
from promptship.validation.judge import Graded, Judge
from promptship.validation.providers import make_provider
from promptship.validation.providers.base import Completion, Provider, ProviderError
from promptship.validation.scoring import Scorer, get_scorer
from promptship.worker import worker_id

log = logging.getLogger("promptship.validation")


@dataclass
class Progress:
    """Live counts of a run, for progress bars."""

    total: int
    passed: int = 0
    failed: int = 0
    errored: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        if not self.done or self.done >= self.total:
            return None
        return self.elapsed / self.done * (self.total - self.done)


@dataclass(frozen=True)
class RunnerSettings:
    concurrency: int = 8
    timeout: float = 60.0  # seconds, per model call, retries included
    max_retries: int = 4
    heartbeat: float = 5.0  # seconds between progress reports to the store
    score_batch: int = 64


ProviderFactory = Callable[..., Provider]


@dataclass
class _Calls:
    """What a run calls: the version's model, the judge for llm-rubric cases, and the notes
    the calls leave for the run's record."""

    provider: Provider
    judge: Judge | None
    notes: set[str]


def regressions(results: list[dict[str, Any]], baseline: list[dict[str, Any]] | None) -> list[str]:
    """Inputs of cases that pass in the baseline (production) run and fail here."""
    if not baseline:
        return []
    passed_before = {case_identity(r) for r in baseline if r.get("passed") and not r.get("error")}
    return [
        str(r["input"])[:200]
        for r in results
        if not (r.get("passed") and not r.get("error")) and case_identity(r) in passed_before
    ]


class SuiteRunner:
    """Executes claimed validation runs for one worker (a CLI process or a server replica).
    Close it (``aclose``, or ``async with``) to close the connections it keeps."""

    def __init__(
        self,
        core: Promptship,
        *,
        settings: RunnerSettings | None = None,
        scorer: Scorer | None = None,
        provider_factory: ProviderFactory = make_provider,
        owner: str | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or RunnerSettings()
        self._scorer = scorer
        self._provider_factory = provider_factory
        self.owner = owner or worker_id()
        #: set by the server on shutdown: a run cut short is handed back to the queue
        self.shutting_down = False
        #: providers opened by earlier runs, kept for their connections: by (kind, role)
        self._providers: dict[tuple[str, str], Provider] = {}

    async def __aenter__(self) -> SuiteRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers (and their connections) kept from earlier runs; a later run
        opens new ones."""
        opened, self._providers = list(self._providers.values()), {}
        for provider in opened:
            await provider.aclose()

    def _provider(self, kind: str, role: str) -> Provider:
        """The ``kind`` provider for the run's calls (``role`` "suite") or the judge's, kept
        for the next run. Raises ``BadInput`` when the provider is not configured."""
        key = (kind, role)
        provider = self._providers.get(key)
        if provider is None:
            options: dict[str, Any] = {
                "timeout": self.settings.timeout,
                "max_retries": self.settings.max_retries,
            }
            if role == "suite":
                options["strip_reasoning"] = self.core.policy.strip_reasoning
            provider = self._providers[key] = self._provider_factory(kind, **options)
        return provider

    @property
    def scorer(self) -> Scorer:
        return self._scorer or get_scorer()

    async def start(self, name: str, version: str, actor: Actor) -> int:
        """Record a new running run of the version's suite, owned by this worker."""
        run = await self.core.start_validation_run(name, version, actor, owner=self.owner)
        return run.id

    async def execute(
        self, run_id: int, on_progress: Callable[[Progress], None] | None = None
    ) -> RunView:
        """Run every case of a claimed run and record the results. Cancelling the calling
        task records the run as cancelled."""
        spec = await self.core.validation_run_spec(run_id)
        try:
            provider = self._provider(spec.provider, "suite")
        except BadInput as exc:  # e.g. a missing API key: fail before any case runs
            return await self.core.finish_validation_run(
                run_id, [], error=exc.message, owner=self.owner
            )
        cases = [TestCase.model_validate(t) for t in spec.tests]
        judge: Judge | None = None
        if any(case.type is AssertionType.LLM_RUBRIC for case in cases):
            try:
                judge = self._judge()
            except BadInput as exc:  # no judge in the policy, or its provider unconfigured
                return await self.core.finish_validation_run(
                    run_id, [], error=exc.message, owner=self.owner
                )
        progress = Progress(total=len(cases))
        notes: set[str] = set()
        try:
            results = await self._run_cases(
                run_id, spec, _Calls(provider, judge, notes), cases, progress, on_progress
            )
        except asyncio.CancelledError:
            if self.shutting_down:  # the next worker (a replica, or this one restarted) runs it
                await asyncio.shield(self.core.hand_back_validation_run(run_id, self.owner))
            else:  # the worker stops it: system work, named after the worker
                worker = Actor(self.owner, Via.SYSTEM)
                await asyncio.shield(
                    self.core.stop_validation_run(run_id, worker, RunState.CANCELLED, "cancelled")
                )
            raise
        if results is None:  # the run was cancelled or taken over elsewhere
            return await self.core.validation_run(run_id)
        found = regressions(results, spec.baseline_results)
        return await self.core.finish_validation_run(
            run_id, results, regressions=found, owner=self.owner, notes=sorted(notes)
        )

    def _prime(self, cases: list[TestCase]) -> asyncio.Task[None] | None:
        """Encode the ``score`` cases' expected answers while the first calls are in flight:
        they are known before any answer, so the answers are what is left to encode as they
        arrive, and the last ones are scored sooner after the last call. In batches, so
        that answers' batches take turns with them at the scorer. A failure here is left
        to the answers' scoring to report."""
        expected = list(
            dict.fromkeys(str(c.expected) for c in cases if c.type is AssertionType.SCORE)
        )
        if not expected:
            return None
        size = self.settings.score_batch

        async def prime() -> None:
            try:
                for start in range(0, len(expected), size):
                    await self.scorer.embed(expected[start : start + size])
            except Exception:  # the same failure errs the answers' scoring, which says why
                log.debug("encoding expected answers ahead failed", exc_info=True)

        return asyncio.create_task(prime())

    def _judge(self) -> Judge:
        policy = self.core.policy.judge
        if policy is None:
            raise BadInput(
                "the suite has llm-rubric cases, and promptship.yaml names no judge to grade them",
                hint="add judge: {provider: anthropic, model: MODEL} to promptship.yaml",
            )
        return Judge(self._provider(policy.provider, "judge"), policy.model, policy.max_tokens)

    async def _run_cases(
        self,
        run_id: int,
        spec: Any,
        calls: _Calls,
        cases: list[TestCase],
        progress: Progress,
        on_progress: Callable[[Progress], None] | None,
    ) -> list[dict[str, Any]] | None:
        results: list[dict[str, Any] | None] = [None] * len(cases)
        answered: asyncio.Queue[tuple[int, Completion] | None] = asyncio.Queue()
        limit = AdaptiveLimiter(self.settings.concurrency)

        def report() -> None:
            if on_progress is not None:
                on_progress(progress)

        def errored(indices: list[int], why: str) -> None:
            for i in indices:
                results[i] = _result(cases[i], None, error=why)
            progress.errored += len(indices)
            report()

        async def ask(indices: list[int]) -> None:
            """One call for the cases that share an input and vars; each checks the answer."""
            first = cases[indices[0]]
            try:
                rendered = render_prompt(
                    spec.system_prompt, spec.messages, spec.variables, first.vars
                )
            except BadInput as exc:  # pushed before its vars were checked, or a filter failed
                errored(indices, f"cannot render: {exc.message}")
                return
            async with limit:
                try:
                    completion = await calls.provider.complete(
                        model=spec.model,
                        system=rendered.system,
                        messages=rendered.conversation(first.input),
                        temperature=spec.temperature,
                        max_tokens=spec.max_tokens,
                    )
                except ProviderError as exc:
                    errored(indices, str(exc))
                    return
            calls.notes.update(completion.notes)
            # the call's tokens are counted once, with the first case that uses it
            shared = replace(completion, input_tokens=None, output_tokens=None)
            judged = []
            for position, i in enumerate(indices):
                answer = completion if position == 0 else shared
                if cases[i].type is AssertionType.LLM_RUBRIC:
                    judged.append(judge(i, answer))
                else:
                    await answered.put((i, answer))
            await asyncio.gather(*judged)

        async def judge(index: int, completion: Completion) -> None:
            case = cases[index]
            assert calls.judge is not None
            async with limit:  # the judge's call shares the run's concurrency
                graded = await calls.judge.grade(
                    case, completion.text, resolve(spec.variables, case.vars)
                )
            calls.notes.update(f"judge: {note}" for note in graded.notes)
            results[index] = _result(
                case, completion, verdict=graded.verdict, error=graded.error, judged=graded
            )
            if graded.error:
                progress.errored += 1
            elif graded.verdict is not None and graded.verdict.passed:
                progress.passed += 1
            else:
                progress.failed += 1
            report()

        def apart(case: TestCase, got: str, failure: Exception) -> AssertionResult | str:
            """The case checked alone, after its batch's check failed with ``failure``; or
            why it cannot be: a ``score`` case shares the batch's failure (the scorer's)."""
            if case.type is AssertionType.SCORE:
                return f"the answer could not be scored: {reason(failure)}"
            try:
                return check_text(case, got)
            except Exception as exc:
                return f"the answer could not be checked: {reason(exc)}"

        async def score() -> None:
            while True:
                first = await answered.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self.settings.score_batch and not answered.empty():
                    item = answered.get_nowait()
                    if item is None:
                        await answered.put(None)  # seen again after this batch
                        break
                    batch.append(item)
                verdicts: list[AssertionResult | str]
                try:
                    verdicts = list(
                        await check_many(
                            [(cases[i], completion.text) for i, completion in batch], self.scorer
                        )
                    )
                except Exception as exc:  # e.g. the scorer unavailable: checked one by one
                    log.warning("run %s: checking a batch of answers failed", run_id, exc_info=True)
                    verdicts = [apart(cases[i], completion.text, exc) for i, completion in batch]
                for (i, completion), verdict in zip(batch, verdicts, strict=True):
                    if isinstance(verdict, str):  # why the answer could not be checked
                        results[i] = _result(cases[i], completion, error=verdict)
                        progress.errored += 1
                        continue
                    results[i] = _result(cases[i], completion, verdict=verdict)
                    if verdict.passed:
                        progress.passed += 1
                    else:
                        progress.failed += 1
                report()

        stopped_elsewhere = asyncio.Event()

        async def heartbeat(work: asyncio.Task[None]) -> None:
            while not work.done():
                await asyncio.sleep(self.settings.heartbeat)
                try:
                    alive = await self.core.heartbeat_validation_run(
                        run_id, self.owner, progress.passed, progress.failed, progress.errored
                    )
                except Exception:  # e.g. "database is locked": the next beat tries again
                    log.warning("run %s: its heartbeat was not recorded", run_id, exc_info=True)
                    continue
                if not alive:
                    log.warning("run %s was cancelled or taken over; stopping", run_id)
                    stopped_elsewhere.set()
                    work.cancel()
                    return

        async def work() -> None:
            scorer_task = asyncio.create_task(score())
            priming = self._prime(cases)
            try:
                shared: dict[str, list[int]] = {}
                for index, case in enumerate(cases):
                    key = json.dumps([case.input, case.vars], sort_keys=True, default=str)
                    shared.setdefault(key, []).append(index)
                async with asyncio.TaskGroup() as group:
                    for indices in shared.values():
                        group.create_task(ask(indices))
                await answered.put(None)
                await scorer_task
            finally:
                scorer_task.cancel()
                waits: list[asyncio.Task[None]] = [scorer_task]
                if priming is not None:
                    priming.cancel()
                    waits.append(priming)
                await asyncio.wait(waits)

        report()
        task = asyncio.create_task(work())
        beat = asyncio.create_task(heartbeat(task))
        try:
            await task
        except asyncio.CancelledError:
            if stopped_elsewhere.is_set():
                return None
            raise
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return [r for r in results if r is not None]


def _result(
    case: TestCase,
    completion: Completion | None,
    *,
    verdict: Any = None,
    error: str | None = None,
    judged: Graded | None = None,
) -> dict[str, Any]:
    result = {
        "input": case.input,
        "type": case.type.value,
        "expected": case.expected,
        "threshold": case.threshold,
        "got": completion.text if completion else None,
        "score": verdict.score if verdict else None,
        "passed": bool(verdict and verdict.passed),
        "detail": verdict.detail if verdict else None,
        "error": error,
        "latency_ms": round(completion.latency_ms, 1) if completion else None,
        "input_tokens": completion.input_tokens if completion else None,
        "output_tokens": completion.output_tokens if completion else None,
    }
    if case.vars:
        result["vars"] = case.vars
    if judged is not None:
        result["judge"] = judged.record()
    return result


class ValidationWorker:
    """The server's loop: claim queued runs (from Slack or the API) and execute them."""

    def __init__(self, runner: SuiteRunner, poll_interval: float = 1.0) -> None:
        self.runner = runner
        self.poll_interval = poll_interval

    async def run_forever(self) -> None:
        core = self.runner.core
        while True:
            try:
                await core.recover_interrupted_runs()
                run_id = await core.claim_validation_run(self.runner.owner)
                if run_id is None:
                    await asyncio.sleep(self.poll_interval)
                    continue
                await self.runner.execute(run_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; the run itself is recorded as interrupted
                log.exception("validation worker error")
                await asyncio.sleep(self.poll_interval)
