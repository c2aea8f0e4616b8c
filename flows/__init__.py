"""Prefect 3 flows: thin wiring over ferbatch library functions."""

import os

# Send ferbatch's own log lines to Prefect's run logs too, and keep Prefect quiet on offline machines.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ferbatch")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
