"""The Slack app: Bolt listeners and Block Kit rendering over promptship's services.

It imports the core's services and never the store: see tests/test_project.py.
"""
