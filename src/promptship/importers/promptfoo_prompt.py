"""What a new prompt file takes from a promptfoo config besides its tests: the system
prompt and few-shot turns (from ``prompts:``) and the model (from ``providers:``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from promptship.domain.promptfile import Provider
from promptship.errors import BadInput
from promptship.importers.promptfoo_asserts import Malformed, Unsupported, kind_of, short
from promptship.importers.promptfoo_files import Files, Prompt, file_ref, prompt_from_text

TEXT_PROMPT_NOTE = (
    "promptfoo sends the prompt as the user's turn; here it is the system prompt and each "
    "case's input is the user's turn: review system_prompt"
)
_PROMPT_FILE = re.compile(r"^[\w./-]+\.(?:txt|md|j2|json|jsonl|ya?ml)$", re.IGNORECASE)
_PROVIDERS = (
    (re.compile(r"anthropic:(?:messages:)?([^:\s]+)"), Provider.ANTHROPIC),
    (re.compile(r"openai:(?:chat:)?([^:\s]+)"), Provider.OPENAI_COMPATIBLE),
)


@dataclass
class PromptParts:
    """A new prompt file's settings taken from the config."""

    system_prompt: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    model: str | None = None
    provider: Provider | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    notes: list[str] = field(default_factory=list)


def load_prompts(raw: Any, files: Files) -> list[Prompt]:
    """Every prompt ``prompts:`` names: inline texts and chats, files and globs."""
    if raw is None:
        return []
    if isinstance(raw, str):
        entries: list[Any] = [raw]
    elif isinstance(raw, list):
        entries = raw
    elif isinstance(raw, dict):  # {path: label}
        entries = list(raw)
    else:
        raise Malformed(
            f"prompts: is a list of prompts (texts or file:// paths), not {kind_of(raw)}"
        )
    prompts: list[Prompt] = []
    for index, entry in enumerate(entries):
        where = f"prompts[{index}]"
        if isinstance(entry, dict):
            entry = entry.get("raw", entry.get("id"))
        if isinstance(entry, list):
            prompts.append(Prompt(where, chat=entry))
            continue
        if not isinstance(entry, str) or not entry:
            raise Malformed(f"{where}: a prompt is a text, a file:// path or {{raw: TEXT}}")
        if re.match(r"^(?:exec:|[a-z][a-z0-9+.-]*://)", entry) and not file_ref(entry):
            raise Unsupported(
                "prompts from elsewhere", f"{where}: {short(entry)}: write the prompt out"
            )
        if file_ref(entry) or (_PROMPT_FILE.match(entry) and (files.base / entry).is_file()):
            prompts.extend(files.prompts_from(entry, where))
        else:
            prompts.append(prompt_from_text(entry, where))
    return prompts


def choose_prompt(prompts: list[Prompt], index: int | None) -> Prompt | None:
    """The one prompt to import: the only one, or ``--prompt INDEX`` (1 is the first)."""
    if index is not None:
        if not 1 <= index <= len(prompts):
            raise BadInput(
                f"--prompt {index}: the config has {len(prompts)} prompt(s)",
                hint=f"pass --prompt 1 to {len(prompts)}" if prompts else "pass --system-prompt",
            )
        return prompts[index - 1]
    if len(prompts) > 1:
        listed = "; ".join(f"{n}: {_summary(p)}" for n, p in enumerate(prompts[:20], 1))
        raise BadInput(
            f"the config has {len(prompts)} prompts and a prompt file holds one: {listed}",
            hint="choose one with --prompt INDEX (1 is the first)",
        )
    return prompts[0] if prompts else None


def _summary(prompt: Prompt) -> str:
    if prompt.chat is not None:
        return f"{prompt.label} (a chat of {len(prompt.chat)} messages)"
    text = " ".join((prompt.text or "").split())
    return (
        f"{prompt.label}: {short(text, 50)}"
        if not prompt.label.startswith("prompts[")
        else (short(text, 50))
    )


def _only_var(text: str, name: str) -> bool:
    return re.fullmatch(r"\s*\{\{-?\s*" + re.escape(name) + r"\s*-?\}\}\s*", text) is not None


def prompt_parts(prompt: Prompt | None, input_var: str) -> PromptParts:
    """The system prompt and few-shot turns of the chosen prompt. A text prompt becomes the
    system prompt; a chat's system messages do, its user and assistant turns become
    ``messages``, and a last user turn that is only the input var is dropped (each case's
    input takes its place)."""
    parts = PromptParts()
    if prompt is None:
        return parts
    if prompt.chat is None:
        text = prompt.text or ""
        if text.strip() and not _only_var(text, input_var):
            parts.system_prompt = text
            parts.notes.append(TEXT_PROMPT_NOTE)
        return parts
    systems: list[str] = []
    for number, message in enumerate(prompt.chat):
        where = f"{prompt.label}: message {number + 1}"
        if not isinstance(message, dict):
            raise Malformed(f"{where}: a chat message is {{role, content}}, not {kind_of(message)}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise Unsupported(
                "chat content that is not text",
                f"{where}: content is {kind_of(content)}; promptship sends text",
            )
        if role in ("system", "developer"):
            systems.append(content)
        elif role in ("user", "assistant"):
            if not content.strip():
                raise Malformed(f"{where}: the {role} turn is empty")
            parts.messages.append({"role": role, "content": content})
        else:
            raise Malformed(f"{where}: role {role!r}; a chat has system, user and assistant turns")
    if parts.messages and parts.messages[-1]["role"] == "user":
        if _only_var(parts.messages[-1]["content"], input_var):
            parts.messages.pop()
        else:
            parts.notes.append(
                "the chat's last user turn is more than {{ " + input_var + " }}: it is kept as "
                "a few-shot turn and each case's input is sent after it: review messages"
            )
    if systems:
        parts.system_prompt = "\n\n".join(systems)
        if len(systems) > 1:
            parts.notes.append(f"the chat's {len(systems)} system messages were joined")
    return parts


def provider_defaults(config: dict[str, Any], files: Files, parts: PromptParts) -> None:
    """The model, provider, temperature and max_tokens of the config's first provider,
    when it is Anthropic's or OpenAI's chat API."""
    raw = config.get("providers", config.get("targets"))
    first: Any = raw[0] if isinstance(raw, list) and raw else raw
    if file_ref(first):
        first = files.load_data(files.matches(first, "providers")[0], "providers")
        first = first[0] if isinstance(first, list) and first else first
    if isinstance(first, dict) and "id" not in first and len(first) == 1:
        name, options = next(iter(first.items()))
        first = {"id": name, **(options if isinstance(options, dict) else {})}
    ident = first.get("id") if isinstance(first, dict) else first
    if not isinstance(ident, str):
        return
    for pattern, provider in _PROVIDERS:
        match = pattern.fullmatch(ident)
        if match:
            parts.model, parts.provider = match.group(1), provider
    if isinstance(raw, list) and len(raw) > 1:
        parts.notes.append(
            f"the config compares {len(raw)} providers; the file takes the first ({ident})"
        )
    settings = first.get("config") if isinstance(first, dict) else None
    if isinstance(settings, dict):
        temperature, max_tokens = settings.get("temperature"), settings.get("max_tokens")
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            if 0 <= temperature <= 2:
                parts.temperature = float(temperature)
            if parts.provider == "anthropic" and temperature > 1:
                parts.temperature = 1.0
                parts.notes.append(
                    f"temperature {temperature:g} is over the anthropic provider's 0 to 1: "
                    "the file says 1"
                )
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1:
            parts.max_tokens = max_tokens
