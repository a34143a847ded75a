"""promptship: ship LLM prompts the way good teams ship software."""

__version__ = "0.1.0"
