"""Apache Airflow provider for migrating pre-hashed API keys into Unkey."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
