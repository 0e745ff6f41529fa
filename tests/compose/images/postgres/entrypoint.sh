#!/bin/sh
# An empty PGDATA gets a cluster whose superuser is POSTGRES_USER (password auth over
# TCP from 127.0.0.1, as initdb sets it) and a database POSTGRES_DB; then postgres runs with the given arguments.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:?}" >"$pwfile"
  # UTF8 as in the official image (C locale would make it SQL_ASCII, which psycopg
  # answers with bytes).
  initdb -D "$PGDATA" -U "${POSTGRES_USER:=postgres}" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  if [ "${POSTGRES_DB:-$POSTGRES_USER}" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"${POSTGRES_DB:-$POSTGRES_USER}\"" >/dev/null
  fi
  pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
fi
exec postgres "$@"
