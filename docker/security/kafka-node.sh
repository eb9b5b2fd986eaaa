#!/bin/bash
# A broker of the compose stack with the security of a managed Kafka (docs/SECURITY.md), run by apache/kafka:
#
#   SASL_SSL   :9092  clients, SCRAM-SHA-512 (users admin and stream-ctr, created at format time)
#   SSL        :9094  between brokers, client certificates required (CN=kafka-N is the principal)
#   CONTROLLER :9093  KRaft quorum, TLS with client certificates too: no anonymous principal has any right
#
# The StandardAuthorizer denies what no ACL allows; the `acls` service gives User:stream-ctr its topics and groups
# (stream-ctr acls --apply). Every KAFKA_* variable of the service becomes a line of server.properties, as the
# image's own entrypoint does (KAFKA_NODE_ID -> node.id); the secrets come from the `secrets` volume.
set -euo pipefail
S=/secrets/kafka
CONFIG=/tmp/server.properties
node="kafka-${KAFKA_NODE_ID}"
{
  env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=\|^KAFKA_OPTS=' | while IFS='=' read -r key value; do
    name=$(echo "${key#KAFKA_}" | tr '[:upper:]' '[:lower:]' | tr '_' '.')
    echo "$name=$value"
  done
  echo "listeners=SASL_SSL://:9092,CONTROLLER://:9093,SSL://:9094"
  echo "advertised.listeners=SASL_SSL://${node}:9092,SSL://${node}:9094"
  echo "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL"
  echo "controller.listener.names=CONTROLLER"
  echo "inter.broker.listener.name=SSL"
  echo "ssl.keystore.type=PEM"
  echo "ssl.keystore.location=$S/${node}.keystore.pem"
  echo "ssl.truststore.type=PEM"
  echo "ssl.truststore.location=$S/ca.pem"
  echo "listener.name.ssl.ssl.client.auth=required"
  echo "listener.name.controller.ssl.client.auth=required"
  echo "ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT"
  echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
  echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
  echo "super.users=User:admin;User:kafka-1;User:kafka-2;User:kafka-3"
} > "$CONFIG"

# The healthcheck's client: the admin user over SASL_SSL.
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat $S/admin.password)";
ssl.truststore.type=PEM
ssl.truststore.location=$S/ca.pem
PROPS

/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$CLUSTER_ID" -c "$CONFIG" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat $S/admin.password)]" \
  --add-scram "SCRAM-SHA-512=[name=stream-ctr,password=$(cat $S/stream-ctr.password)]"
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
