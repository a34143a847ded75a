"""The model double's judge: grades an ``llm-rubric`` request deterministically, so tests and
the demo can cover the judge without a real model.

The rubric's quoted phrases (``"refund"``, ``'30 days'``) must all appear in the answer, in
any case; a rubric without quotes asks for its content words, and passes when at least half
appear. The verdict is the JSON object a real judge is asked for. A rubric that says
``[judge answers prose]`` makes the double answer prose instead of a verdict, as a
misbehaving judge model would.
"""

from __future__ import annotations

import json
import re

PROSE_MARK = "[judge answers prose]"
_TAG = re.compile(r"<(rubric|answer)>\n(.*?)\n</\1>", re.DOTALL)
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "the a an and or of to in on for with that this is are be it its answer should must "
    "says say mention mentions user reply response".split()
)


def is_judge_request(system: str) -> bool:
    return system.startswith("You are promptship's grader.")


def grade(user: str) -> str:
    parts = {kind: text for kind, text in _TAG.findall(user)}
    rubric, answer = parts.get("rubric", ""), parts.get("answer", "")
    if PROSE_MARK in rubric:
        return "The answer looks fine to me overall."
    quoted = [a or b for a, b in _QUOTED.findall(rubric)]
    folded = answer.casefold()
    if quoted:
        wanted, needed = quoted, len(quoted)
        found = [phrase for phrase in quoted if phrase.casefold() in folded]
    else:
        words = set(_WORD.findall(folded))
        wanted = [w for w in dict.fromkeys(_WORD.findall(rubric.casefold())) if w not in _STOP]
        needed = max(1, (len(wanted) + 1) // 2)
        found = [w for w in wanted if w in words]
    score = round(len(found) / len(wanted), 4) if wanted else 1.0
    passed = len(found) >= needed
    missing = [w for w in wanted if w not in found]
    reason = (
        f"mentions {', '.join(found)}"
        if passed and found
        else f"does not mention {', '.join(missing[:5])}"
        if missing
        else "meets the rubric"
    )
    return json.dumps({"pass": passed, "score": score, "reason": reason})
