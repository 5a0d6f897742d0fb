#!/usr/bin/env bash
# Demo of projectord's main job on a throwaway local PostgreSQL:
# build, start a cluster, load sample events, run the daemon, watch the
# read model fill up, append an event live, stop cleanly. Leaves nothing
# behind (the cluster and temp files are removed on any exit).
set -euo pipefail
cd "$(dirname "$0")/.."

python=/usr/bin/python3                      # Debian's, with psycopg
pgcluster=("$python" tests/integration/pgcluster.py)
export PGTZ=UTC                              # show timestamps in UTC

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing dependencies (if missing) and building"
scripts/install-deps.sh
cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null
bin=build/projectord

work=$(mktemp -d /tmp/projectord-demo.XXXXXX)
chmod 755 "$work"                            # the postgres user must reach $work/pg
daemon_pid=

cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  "${pgcluster[@]}" destroy "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "Starting a throwaway PostgreSQL in $work/pg"
"${pgcluster[@]}" start "$work/pg" >/dev/null
conninfo=$("${pgcluster[@]}" createdb --empty "$work/pg" app)
echo "database: $conninfo (empty)"

q() { psql -X -q -v ON_ERROR_STOP=1 -d "$conninfo" "$@"; }

say "Creating the schema: $bin migrate --sql-dir sql"
PROJECTORD_DATABASE_URL="$conninfo" "$bin" -c /dev/null migrate --sql-dir sql | tail -n 3

say "Loading examples/sample_events.sql"
q -o /dev/null -f examples/sample_events.sql
q -c "SELECT global_position AS pos, event_type, aggregate_version AS v, occurred_at
        FROM event_store.domain_event ORDER BY global_position"

say "A projection declared in a file: examples/declared/logins_per_day.conf, and its table"
# Each declared projection's table: examples/declared/NAME.sql (one added there runs too).
for table_sql in examples/declared/*.sql; do q -f "$table_sql"; done

cat >"$work/projectord.conf" <<EOF
database = { conninfo = "$conninfo"; };
projection_dir = "$PWD/examples/declared";
batch_size = 1000;
poll_interval_ms = 1000;
log = { level = "info"; };
EOF

say "$bin -c $work/projectord.conf list: compiled-in and declared side by side"
"$bin" -c "$work/projectord.conf" list

say "Running: $bin -c $work/projectord.conf run"
"$bin" -c "$work/projectord.conf" run >"$work/projectord.log" 2>&1 &
daemon_pid=$!

# Caught up: every projection of the build (`list --names`: compiled-in and
# declared, however many were added) has passed the newest event and is live.
projections=$("$bin" -c "$work/projectord.conf" list --names | paste -sd, -)
caught_up() {
  [ "$(q -tA -c "SELECT count(*) = cardinality(string_to_array('$projections', ','))
                     AND bool_and(last_position >= head_position AND status = 'live')
                   FROM read_model.projection_status
                  WHERE projection_name = ANY (string_to_array('$projections', ','))")" = t ]
}
wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      echo "projectord exited:"; cat "$work/projectord.log"; exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out; projectord log:"; cat "$work/projectord.log"; exit 1
    fi
    sleep 0.1
  done
}
wait_for 30 caught_up

say "The read model"
q -c "SELECT name, product_count, created_at, updated_at FROM read_model.categories ORDER BY name"
q -c "SELECT sku, name, price_cents, status, version, updated_at FROM read_model.products ORDER BY sku"
q -c "SELECT email, role, status, email_verified, login_count, last_login_at FROM read_model.users ORDER BY email"
q -c "SELECT id, status, item_count, total_cents, placed_at, shipped_at, cancelled_at FROM read_model.orders ORDER BY placed_at"
q -c "TABLE read_model.daily_sales ORDER BY day"
q -c "TABLE read_model.event_type_stats ORDER BY event_type"
q -c "TABLE read_model.logins_per_day ORDER BY day"

say "$bin -c $work/projectord.conf status"
"$bin" -c "$work/projectord.conf" status

say "Appending one more event live: grace logs in"
logins() { q -tA -c "SELECT login_count FROM read_model.users WHERE email = 'grace@example.com'"; }
before=$(logins)
q -o /dev/null -c "SELECT event_store.append_events('User', 'a0000000-0000-4000-8000-000000000002', NULL,
                     ARRAY['{\"event_type\": \"UserLoggedIn\", \"event_data\": {}}'::jsonb])"
login_arrived() { [ "$(logins)" -gt "$before" ]; }
wait_for 10 login_arrived
# The daemon's own measure, from the event's commit to its batch's commit
# (polling with psql here would mostly time psql's start-up).
latency=$(q -tA -c "SELECT round(apply_latency_ms::numeric, 1) FROM read_model.projection_metadata
                    WHERE projection_name = 'users'")
echo "grace's login_count went from $before to $(logins); committed to the read model ${latency} ms after the event's commit"

say "Stopping projectord with SIGTERM"
kill -TERM "$daemon_pid"
rc=0; wait "$daemon_pid" || rc=$?
daemon_pid=
echo "projectord exited with $rc; its log:"
cat "$work/projectord.log"
q -c "SELECT projection_name, status, last_position FROM read_model.projection_metadata ORDER BY 1"
[ "$rc" -eq 0 ]
