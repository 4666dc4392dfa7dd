#!/bin/bash
# Run once by the postgres image when the primary's data directory is created: let the replica
# stream from it (the bridge user may replicate; the replica connects by password).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "ALTER ROLE \"$POSTGRES_USER\" REPLICATION"
echo "host replication $POSTGRES_USER all scram-sha-256" >> "$PGDATA/pg_hba.conf"
