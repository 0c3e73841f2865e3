#!/bin/sh
# Entrypoint of the Officina image: the `officina` CLI.
#
#   IMAGE migrate                          -> officina migrate
#   IMAGE gunicorn ... / IMAGE celery ...  -> runs that program (compose starts web and workers so)
#
# Only the programs listed below bypass the CLI, so an `officina` subcommand can never be shadowed
# by a same-named binary on PATH.
set -e
case "${1:-}" in
  officina|gunicorn|celery|python|python3|sh|bash)
    exec "$@"
    ;;
  "")
    exec officina --help
    ;;
  *)
    exec officina "$@"
    ;;
esac
