"""Names and files written safely: names escaped for a terminal, CSV, Markdown and HTML (`text`), and new files
never written over or through what is there (`files`).

With `classes` and `errors`, the bottom layer: every other part of ferbatch may use it, and it uses nothing of
theirs. Its modules are imported by name; this file imports nothing.
"""
