"""The parts of :class:`promptship.services.core.Promptship`, one mixin per noun it serves.

Each mixin's methods own one transaction and call the plain functions of
``promptship.services``; :mod:`promptship.services.facade.base` holds what they share.
"""
