"""Bolt listeners, grouped by Slack surface; each module wires itself with ``register(app)``.

A listener does four things: ``ack``, parse, one service call, render with ``bot.blocks``.
Errors propagate to the one error handler in ``bot.app``.
"""
