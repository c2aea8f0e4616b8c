#!/bin/sh
# The image's entrypoint. `docker run IMAGE score /data/photos ...` (a ferbatch subcommand, an option such as
# --help, or nothing) runs ferbatch; any other command runs as given, so that a Prefect docker or kubernetes
# worker, which starts a flow run by giving the container its own command (`prefect flow-run execute`),
# and `docker run -it IMAGE sh` work. tests/test_container.py checks this list against the CLI's commands.
set -e
case "${1:-}" in
    "" | -* | analyze | config | evaluate | label | models | nightly | presets | report | score | serve | train)
        exec ferbatch "$@" ;;
    *)
        exec "$@" ;;
esac
