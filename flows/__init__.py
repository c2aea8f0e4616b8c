"""Prefect 3 flows: thin wiring over ferbatch library functions (installed as `ferbatch_flows`)."""
