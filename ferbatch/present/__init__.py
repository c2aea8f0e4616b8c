"""What a person sees: the progress bar, run summaries and report tables on the terminal (`console`), and a run's
self-contained HTML page of charts (`html_report`).

It reads the domain (reports, models) and never the process layer (`ferbatch.runtime`). Its modules are imported by
name; this file imports nothing, so the console loads no charting library.
"""
