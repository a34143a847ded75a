"""``python -m promptship.cli``."""

from promptship.cli import main

main()
