#!/bin/sh
# Start Debian's PostgreSQL and create the role and database the ledger
# tests use; prints the KMETER_TEST_POSTGRES line to export.
#
#   apt-get install -y postgresql      # once
#   eval "$(scripts/pg-test-setup.sh)"
#   go test -count=1 ./internal/ledger/... ./internal/window/ ./internal/api/
#
# Every test creates and drops its own schema, so runs never see each
# other's data. Idempotent: run it again and nothing changes.
set -eu
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$ver main"; then
	pg_createcluster "$ver" main >&2
fi
pg_ctlcluster "$ver" main start >&2 2>/dev/null || true
for i in $(seq 50); do
	su postgres -c "pg_isready -q" && break
	sleep 0.2
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'kmeter'\"" | grep -q 1 ||
	su postgres -c "psql -qc \"CREATE ROLE kmeter LOGIN PASSWORD 'kmeter'\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'kmeter_test'\"" | grep -q 1 ||
	su postgres -c "createdb -O kmeter kmeter_test" >&2
echo "export KMETER_TEST_POSTGRES='postgres://kmeter:kmeter@127.0.0.1:5432/kmeter_test?sslmode=disable'"
