#!/usr/bin/env bash
# Regenerates dashboard.schema.json from the Dashboard type of the npm package @grafana/schema.
# Run once per Grafana upgrade (needs npm; the unit test does not). Works under var/ (git-ignored).
set -euo pipefail
GRAFANA_SCHEMA_VERSION="${GRAFANA_SCHEMA_VERSION:-11.6.16}"
GENERATOR_VERSION="${GENERATOR_VERSION:-2.4.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(cd "$here/../../.." && pwd)/var/grafana-schema"
mkdir -p "$work"
cd "$work"
npm pack --silent "@grafana/schema@${GRAFANA_SCHEMA_VERSION}" >/dev/null
tar xzf "grafana-schema-${GRAFANA_SCHEMA_VERSION}.tgz"
[ -f package.json ] || npm init -y >/dev/null
npm install --silent --no-audit --no-fund "ts-json-schema-generator@${GENERATOR_VERSION}"
npx ts-json-schema-generator --no-type-check \
  --path package/dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts --type Dashboard \
  -o "$here/dashboard.schema.json"
printf '@grafana/schema %s\nts-json-schema-generator %s\ntype Dashboard from dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts\n' \
  "$GRAFANA_SCHEMA_VERSION" "$GENERATOR_VERSION" > "$here/SOURCE"
