"""An answer book for the model double: a tiny, deterministic model that reads its system
prompt.

It answers from the system prompt's own lines, so a changed prompt changes the answers the
way it would with a real model: drop a rule and the answers that relied on it lose it,
change a plan's limit and the answer quotes the new one, add a sign-off and every answer
ends with it.

- A system prompt asking for **SQL as JSON over a schema** (lines like
  ``orders(id, customer_id, total_cents, created_at)``) gets one read-only query composed
  from the question (a count, a sum, ``GROUP BY`` for "per …", ``ORDER BY … LIMIT n`` for
  "the n newest …", a year filter), or ``{"sql": null, ...}`` for a write when the prompt
  forbids writes.
- Any other system prompt is an **assistant's rules**: the answer quotes the rules most
  related to the question (words and a few everyday synonyms: "money back" is a refund),
  turning instructions into replies ("say that X" → "X", "ask the customer to X" →
  "Please X"), and a ``Plans:``-style list is read entry by entry. A rule such as
  ``End every answer with: "…"`` adds its quote to every answer.

    model.responder = answer    # or: python -m promptship.testing.model_double (the default)
"""

from __future__ import annotations

import json
import re

__all__ = ["answer"]

_WORD = re.compile(r"[a-z0-9$]+(?:'[a-z]+)?")
_STOP = frozenset(
    "a an the i me my you your we our is are was were be been can could do does did how what "
    "whats what's when where why who which to of in on at for with and or but if it its it's "
    "this that these those have has had get got any some all there their them they will would "
    "should may might please from by as so not no yes just about into than then also"
    .split()
)  # fmt: skip
#: everyday words → the word a rule would use
_SYNONYMS = {
    "money": "refund", "back": "refund", "charged": "refund", "charge": "refund",
    "refunds": "refund", "reimburse": "refund", "billing": "refund", "billed": "refund",
    "password": "account", "passwords": "account", "login": "account", "log": "account",
    "forgot": "account", "locked": "account", "move": "account", "migrate": "account",
    "region": "account", "delete": "account", "transfer": "account", "access": "account",
    "card": "account", "cards": "account", "email": "account",
    "plan": "plans", "price": "plans", "prices": "plans", "cost": "plans", "costs": "plans",
    "limit": "plans", "limits": "plans", "projects": "project", "upgrade": "plans",
    "downgrade": "plans", "pricing": "plans",
}  # fmt: skip
_SIGN_OFF = re.compile(
    r"(?i)\b(?:end|finish|close|sign off) every (?:answer|reply)\b[^\"“]*[\"“]([^\"”]+)[\"”]"
)
_OPEN = re.compile(r"(?i)\b(?:start|begin|open) every (?:answer|reply)\b[^\"“]*[\"“]([^\"”]+)[\"”]")
_LIST = re.compile(r"^\s*([A-Z][\w ]*?):\s*(.+)$")
_ENTRY = re.compile(r"([A-Z][\w-]*(?: [A-Z][\w-]*)*)\s*\(([^)]*)\)")


def answer(system: str, user: str, model: str) -> str:
    """The model double's reply to ``user`` under ``system`` (``model`` is not consulted)."""
    if _wants_sql(system):
        return _sql_answer(system, user)
    return _rules_answer(system, user)


# -- an assistant following rules -------------------------------------------------------


def _terms(text: str) -> list[str]:
    """Each meaningful word of ``text``, as the word a rule would use."""
    terms = []
    for word in _WORD.findall(text.lower()):
        if word not in _STOP:
            word = _SYNONYMS.get(word, word)
            terms.append(word[:-1] if word.endswith("s") and len(word) > 3 else word)
    return terms


def _words(text: str) -> set[str]:
    return set(_terms(text))


def _rules(system: str) -> list[str]:
    """The prompt's rules: each bullet (with its continuation lines) or sentence line."""
    rules: list[str] = []
    for raw in system.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(("-", "*", "•")):
            rules.append(line.lstrip("-*• ").strip())
        elif raw[:1].isspace() and rules and not _LIST.match(line):
            rules[-1] += " " + line
        else:
            rules.append(line)
    return rules


def _reply_from(rule: str, topic: str) -> str:
    """An instruction turned into what the assistant says."""
    sentences = []
    said = re.search(r"(?i)\bsay that (.+?)(?:\.(?:\s|$)|$)", rule)
    if said:
        sentences.append(_sentence(said.group(1)))
    asked = re.search(r"(?i)\bask the customer to (.+?)(?: and never\b| but\b|\.(?:\s|$)|$)", rule)
    if asked:
        ask = f"Please {asked.group(1)}"
        if topic:
            ask += f", and our team will help you {topic}"
        sentences.append(ask + ".")
    if not sentences:
        sentences.append(_sentence(rule))
    return " ".join(sentences)


def _list_reply(rule: str, words: set[str]) -> str | None:
    """``Plans: Starter (3 projects, $0), Team (...)``: the entries the question names."""
    match = _LIST.match(rule)
    if not match:
        return None
    entries = _ENTRY.findall(match.group(2))
    if not entries:
        return None
    named = [(name, detail) for name, detail in entries if _words(name) & words]
    chosen = named or entries
    kind = match.group(1).rstrip("s").lower()
    return " ".join(f"{name} {kind}: {detail}." for name, detail in chosen)


def _topic(user: str) -> str:
    """ "How do I move my projects to another region?" → "move your projects to another
    region"."""
    text = user.strip().rstrip("?.!").strip()
    match = re.match(
        r"(?i)^(?:how (?:do|can|could) (?:i|we)|can (?:i|we)|could (?:i|we))\s+(.+)$", text
    )
    if not match:
        return ""
    topic = match.group(1)
    return re.sub(r"\bmy\b", "your", re.sub(r"\bour\b", "your", topic))


def _rules_answer(system: str, user: str) -> str:
    rules = _rules(system)
    opener = next((m.group(1) for r in rules if (m := _OPEN.search(r))), None)
    closer = next((m.group(1) for r in rules if (m := _SIGN_OFF.search(r))), None)
    words = _words(user)
    terms = _terms(user)
    scored = []
    for index, rule in enumerate(rules):
        if _OPEN.search(rule) or _SIGN_OFF.search(rule):
            continue
        known = _words(rule)
        overlap = sum(1 for term in terms if term in known)
        if overlap:
            scored.append((overlap, -index, rule))
    scored.sort(reverse=True)
    parts: list[str] = []
    if opener:
        parts.append(opener)
    if scored:
        best = scored[0][0]
        for overlap, _, rule in scored[:2]:
            if overlap < best:
                break
            listed = _list_reply(rule, words)
            parts.append(listed if listed is not None else _reply_from(rule, _topic(user)))
    else:
        parts.append(
            "I'm not sure I can help with that here; I can answer questions about your plan, "
            "billing and account."
        )
    if closer:
        parts.append(closer)
    return " ".join(parts)


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".;,")
    return text[:1].upper() + text[1:] + "."


# -- SQL as JSON over a schema ----------------------------------------------------------

_TABLE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\(([^)]*)\)\s*$", re.MULTILINE)
_WRITES = ("insert", "update", "delete", "drop", "alter", "truncate")
_WRITE_WORDS = {
    "delete": "delete", "remove": "delete", "erase": "delete", "purge": "delete",
    "drop": "drop", "update": "update", "change": "update", "set": "update",
    "rename": "alter", "insert": "insert", "add": "insert", "alter": "alter",
    "truncate": "truncate",
}  # fmt: skip
_SUMS = ("revenue", "sales", "total", "sum", "spent", "spend", "amount")
_NUMBERS = {"one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "twenty": 20}


def _wants_sql(system: str) -> bool:
    return "sql" in system.lower() and bool(_TABLE.search(system))


def _schema(system: str) -> dict[str, list[str]]:
    return {
        name: [c.strip() for c in columns.split(",") if c.strip()]
        for name, columns in _TABLE.findall(system)
    }


def _refuses_writes(system: str) -> bool:
    lowered = system.lower()
    return "read-only" in lowered or any(
        re.search(rf"\bnever\b[^.\n]*\b{verb}\b", lowered) for verb in _WRITES
    )


def _sql_answer(system: str, user: str) -> str:
    schema = _schema(system)
    words = [w for w in _WORD.findall(user.lower())]
    write = next((_WRITE_WORDS[w] for w in words if w in _WRITE_WORDS), None)
    if write and _refuses_writes(system):
        return json.dumps(
            {
                "sql": None,
                "explanation": f"I only write read-only queries, so I will not {write} data; "
                "ask a database administrator for that change.",
            }
        )
    table = _table_for(schema, words)
    columns = schema[table]
    where = _year_filter(user, columns)
    group = _group_column(user, columns)
    amount = next((c for c in columns if c.endswith(("_cents", "amount", "total"))), None)
    if any(w in _SUMS for w in words) and amount:
        measure = (
            f"SUM({amount}) / 100.0 AS total"
            if amount.endswith("_cents")
            else f"SUM({amount}) AS total"
        )
        what = f"the sum of {amount}"
    else:
        measure, what = f"COUNT(*) AS {table}", f"the number of {table}"
    newest = re.search(
        r"(?i)\b(?:(\d+|one|two|three|five|ten|twenty)\s+)?(newest|latest|most recent|oldest|first)\b",
        user,
    )
    if group:
        sql = f"SELECT {group}, {measure} FROM {table}{where} GROUP BY {group} ORDER BY 2 DESC"
        explanation = f"Counts {what} per {group}."
    elif newest and "created_at" in columns:
        count = newest.group(1) or next((w for w in words if w.isdigit()), "10")
        limit = _NUMBERS.get(count, count)
        direction = "ASC" if newest.group(2).lower() in ("oldest", "first") else "DESC"
        sql = f"SELECT * FROM {table}{where} ORDER BY created_at {direction} LIMIT {limit}"
        explanation = f"Lists {limit} {table} by creation time, {newest.group(2).lower()} first."
    else:
        sql = f"SELECT {measure} FROM {table}{where}"
        explanation = f"Computes {what}{' in that period' if where else ''}."
    return json.dumps({"sql": sql, "explanation": explanation})


def _table_for(schema: dict[str, list[str]], words: list[str]) -> str:
    def score(name: str) -> int:
        singular = name.rstrip("s")
        hits = sum(3 for w in words if w.rstrip("s") == singular)
        hits += sum(1 for w in words for c in schema[name] if w in c.split("_"))
        if any(w in _SUMS for w in words) and any(c.endswith("_cents") for c in schema[name]):
            hits += 2
        return hits

    return max(schema, key=score)


def _year_filter(user: str, columns: list[str]) -> str:
    year = re.search(r"\b(19|20)\d\d\b", user)
    if not year or "created_at" not in columns:
        return ""
    start = int(year.group(0))
    return f" WHERE created_at >= '{start}-01-01' AND created_at < '{start + 1}-01-01'"


def _group_column(user: str, columns: list[str]) -> str | None:
    match = re.search(r"(?i)\b(?:per|by|for each|each)\s+([a-z_]+)", user)
    if not match:
        return None
    word = match.group(1).lower()
    return next((c for c in columns if c == word or c.rstrip("s") == word.rstrip("s")), None)
