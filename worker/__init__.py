"""pg-retrain: keep machine-learning models fresh from inside PostgreSQL."""

__version__ = "0.1.0"
