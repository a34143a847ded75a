"""Block Kit rendering: pure functions from service results to blocks and a text fallback,
within Slack's limits by construction (see ``limits``)."""
