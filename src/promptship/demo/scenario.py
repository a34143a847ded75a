"""What the demo ships and the production traffic it makes up.

customer-support 2.1.0 is the example in ``examples/prompts``; 2.2.0 regresses (its own
suite fails at the test gate) and 2.3.0 diverges (its suite passes, but real questions get
different answers, so the shadow soak fails it). The model double's answer book derives its
answers from each version's system prompt, so these outcomes follow from the prompts.
"""

from __future__ import annotations

from pathlib import Path

PROMPTS = Path(__file__).parent / "prompts"
NAME = "customer-support"
GOOD, PREVIOUS, REGRESSING, DIVERGENT = "2.1.0", "2.0.0", "2.2.0", "2.3.0"

#: everyday questions customers ask the support agent in production
QUESTIONS = [
    "How many projects can I create on Starter?",
    "What does the Team plan cost?",
    "I was charged twice this month, can I get a refund?",
    "How do I reset my password?",
    "Can I upgrade from Starter to Team?",
    "Do you have an API?",
    "How do I delete my account?",
    "What is included in Enterprise?",
    "Can I get my money back for last month?",
    "How do I change the email on my account?",
    "Is there a limit on projects for Team?",
    "How do I export my data?",
    "My card was declined, what now?",
    "How can I move my projects to the EU region?",
    "Why was I billed $49?",
    "How do I invite a teammate to my project?",
]


def prompt_file(version: str) -> Path:
    """The prompt file of one of the demo's customer-support versions."""
    return PROMPTS / f"{NAME}-{version}.yaml"
