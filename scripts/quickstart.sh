#!/usr/bin/env bash
# Builds `sop` and walks through the embedded (standalone) database: no servers needed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product sop
SOP=.build/release/sop
DB=${1:-./demo}
rm -rf "$DB"
set -x
$SOP --db "$DB" create-store people --slot-length 500 --unique
$SOP --db "$DB" put people '"ada"' '{"born":1815}'
$SOP --db "$DB" get people '"ada"'
python3 - > /tmp/sop-quickstart.jsonl <<'PY'
import json
names = ["alan", "barbara", "claude", "donald", "edsger", "frances", "grace", "john", "ken", "leslie",
         "margaret", "niklaus", "radia", "tim", "tony", "whitfield"]
for i in range(10000):
    n = names[i % len(names)]
    print(json.dumps({"key": f"{n}-{i:05d}", "value": {"i": i, "name": n}}))
PY
$SOP --db "$DB" import people /tmp/sop-quickstart.jsonl --batch 1000
$SOP --db "$DB" scan people --from '"a"' --to '"m"' --limit 5 --reverse
$SOP --db "$DB" stores
$SOP --db "$DB" delete people '"ada"'
$SOP --db "$DB" check
