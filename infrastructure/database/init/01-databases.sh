#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: creates every
# database named in POSTGRES_MULTIPLE_DATABASES (comma-separated) besides POSTGRES_DB,
# owned by POSTGRES_USER. The official image does not read that variable itself.
set -eu

[ -n "${POSTGRES_MULTIPLE_DATABASES:-}" ] || exit 0

for db in $(echo "$POSTGRES_MULTIPLE_DATABASES" | tr ',' ' '); do
    exists=$(psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'")
    if [ "$exists" = "1" ]; then
        echo "database $db exists"
    else
        echo "creating database $db"
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
    fi
done
