#!/bin/bash
# The real image's configuration contract, reduced to what deploy/compose uses: every
# KAFKA_FOO_BAR variable becomes foo.bar in server.properties (___ -> '-', __ -> '_'),
# CLUSTER_ID names the KRaft cluster, storage is formatted on first start.
set -euo pipefail
CONF=/opt/kafka/config/server.properties
: >"$CONF"
while IFS='=' read -r name value; do
    case "$name" in
        KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_LOG4J_OPTS) continue ;;
        KAFKA_*) ;;
        *) continue ;;
    esac
    key="${name#KAFKA_}"
    key="${key,,}"
    key="${key//___/-}"
    key="${key//__/@}"
    key="${key//_/.}"
    key="${key//@/_}"
    printf '%s=%s\n' "$key" "$value" >>"$CONF"
done < <(env)
grep -q '^log.dirs=' "$CONF" || echo "log.dirs=/var/lib/kafka/data" >>"$CONF"
if [[ ! -f /var/lib/kafka/data/meta.properties ]]; then
    /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool format \
        -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$CONF" 2>&1 | tail -n 1
fi
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$CONF"
