#!/bin/sh
# Applies projectord's schema to the postgres image's new database, from
# /docker-entrypoint-initdb.d (docker-compose.yml mounts this script there
# and sql/ at /projectord/sql). The image runs *.sql files of that
# directory in lexical order, which would put the repeatable migrations
# (R__*.sql) before the versioned ones (V*.sql) they build on; Flyway's
# order is every V file, then every R file.
# PROJECTORD_SQL_DIR: where sql/ is (default /projectord/sql).
set -eu
dir=${PROJECTORD_SQL_DIR:-/projectord/sql}
for f in "$dir"/V*.sql "$dir"/R__*.sql; do
  [ -e "$f" ] || continue
  psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f"
done
