#!/usr/bin/env bash
# The rolling-upgrade drill through real binaries (README "Upgrading"):
#   packaging/upgrade-drill.sh OLD_BINARY NEW_BINARY [DATABASE_URL]
# An older paystar-sync leads a PostgreSQL state; a newer one joins (and
# migrates the schema under it); customer 2 moves from a.csv to b.csv. The older
# leader's write must be refused by the database, the newer one must take over,
# and Paystar (the sandbox) must never see an UnenrollAutopay. Build the older
# binary from a worktree, e.g.:
#   git worktree add /tmp/old 5458e90 && (cd /tmp/old && cargo build --locked)
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
export DBURL=${3:-postgres://postgres@127.0.0.1:5432/test} PAYSTAR_API_KEY=drill
work=$(mktemp -d); schema="upgrade_drill_$$"
cleanup() { pkill -f "$work/config-" || true; kill "${sandbox:-0}" 2>/dev/null || true
  psql "$DBURL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"; mkdir manifests
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
paystar=$(port); old_http=$(port); new_http=$(port)
config() { cat <<YAML
state: { backend: postgres, postgres: { url_env: DBURL, schema: $schema } }
manifests: { dir: manifests, debounce: 100ms, rescan_interval: 1h, on_removal: unenroll }
paystar:
  endpoint: http://127.0.0.1:$paystar/integrations/events
  api_key_env: PAYSTAR_API_KEY
  default_business_unit: water-bill-pay
  retry: { schedule: [50ms, 50ms, 50ms] }
safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }
server: { listen: "127.0.0.1:$1" }
ha: { lease_ttl: 3s, renew_interval: 1s, instance_id: $2 }
YAML
}
config "$old_http" old > config-old.yaml; config "$new_http" new > config-new.yaml
write() { printf 'accountNumber,firstName,lastName,emailAddress,autopay\n%b' "$2" > "manifests/.$1"; mv "manifests/.$1" "manifests/$1"; }
wait_for() { for _ in $(seq 100); do if eval "$1"; then return 0; fi; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }
"$new" sandbox --listen "127.0.0.1:$paystar" > sandbox.log 2>&1 & sandbox=$!
write a.csv '1,Ada,Lovelace,ada@example.com,true\n2,Alan,Turing,alan@example.com,true\n'
write b.csv '3,Grace,Hopper,grace@example.com,true\n'
"$old" run --config config-old.yaml > old.log 2>&1 &
wait_for "curl -sf 127.0.0.1:$old_http/health | grep -q 'role: leader'"
"$new" run --config config-new.yaml > new.log 2>&1 &
wait_for "curl -sf 127.0.0.1:$new_http/health | grep -q 'role: standby'"
echo "the newer instance joined as a standby and migrated the schema under the older leader"
write a.csv '1,Ada,Lovelace,ada@example.com,true\n'
write b.csv '3,Grace,Hopper,grace@example.com,true\n2,Alan,Turing,alan@example.com,true\n'
wait_for "grep -q 'older than the state it writes to' old.log"
echo "the older leader's write was refused by the database:"; grep -o 'ERROR: this paystar-sync is older[^"]*' old.log | head -1
wait_for "curl -sf 127.0.0.1:$new_http/health | grep -q 'role: leader'"
echo "the newer instance leads"
if "$old" run --config config-old.yaml > old2.log 2>&1; then echo "a fresh older instance started" >&2; exit 1; fi
echo "a fresh older instance is refused at open: $(tail -n 1 old2.log)"
write a.csv '1,Ada,Lovelace,ada.l@example.com,true\n'
wait_for "curl -sf 127.0.0.1:$paystar/_sandbox/paystar/events | grep -q 'ada.l@example.com'"
events=$(curl -sf "127.0.0.1:$paystar/_sandbox/paystar/events")
if grep -q UnenrollAutopay <<<"$events"; then echo "Paystar got an UnenrollAutopay: $events" >&2; exit 1; fi
"$new" plan --config config-new.yaml --detailed-exitcode > plan.txt 2>&1 || { echo "plan is not clean:" >&2; cat plan.txt >&2; exit 1; }
echo "no UnenrollAutopay was sent, and the plan after the drill has nothing to do: passed"
