"""The validation gate: run a version's suite against its model, score it, record it."""
