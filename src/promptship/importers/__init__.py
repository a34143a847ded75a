"""Importers: test suites written for other tools, turned into promptship prompt files.

Nothing here imports the server extra: an import works on the light install.
"""
