"""Persistence: SQLAlchemy 2 async models, the database handle and the migrations."""
