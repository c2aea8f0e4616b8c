"""The `ferbatch` process: SIGTERM and SIGINT, exit codes and child processes (`interrupts`), the Prefect API and
its temporary server (`prefect_api`), native libraries' chatter kept off the terminal (`quiet`), and logging
(`logs`).

It sits above the domain: a store or a work folder that needs to defer a signal or register a cleanup gets that
handed in (`ReportStore(defer_signals=...)`, `nightly_work_dir(on_interrupt=...)`), never imports this package.
Its modules are imported by name; this file imports nothing, so `python -m ferbatch.runtime.prefect_api` starts the
server with nothing else of ferbatch loaded.
"""
