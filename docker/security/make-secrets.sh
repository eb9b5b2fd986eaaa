#!/bin/sh
# The compose stack's secrets, made once into the `secrets` volume (mounted at /secrets) by the one-shot `secrets`
# service; nothing here is committed. An existing file is kept, so a restart changes nothing and an operator may put
# their own CA, certificates or passwords in the volume first.
#
#   /secrets/kafka/ca.pem                    the CA that signs every certificate below (its key: ca.key)
#   /secrets/kafka/kafka-N.keystore.pem      broker N: unencrypted PKCS#8 key, then its certificate (CN=kafka-N,
#                                            SANs kafka-N and localhost): Kafka's PEM keystore
#   /secrets/kafka/admin.crt|.key            a client certificate CN=admin (a super user) for operators' tools
#   /secrets/kafka/<user>.password           SCRAM-SHA-512 passwords of admin and stream-ctr
#   /secrets/grafana/admin.password          Grafana's admin password
set -eu
command -v openssl >/dev/null || apk add --no-cache openssl >/dev/null
K=/secrets/kafka
G=/secrets/grafana
mkdir -p "$K" "$G"
cd "$K"

password() { [ -s "$1" ] || openssl rand -base64 24 | tr -d '/+=' > "$1"; }

if [ ! -s ca.pem ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=stream-ctr compose CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
fi

# issue NAME [SAN...]: NAME.key (PKCS#8) and NAME.crt signed by the CA, CN=NAME.
issue() {
  name=$1; shift
  [ -s "$name.crt" ] && return 0
  sans="DNS:$name"
  for san in "$@"; do sans="$sans,DNS:$san"; done
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

for node in 1 2 3; do
  issue "kafka-$node" localhost
  cat "kafka-$node.key" "kafka-$node.crt" > "kafka-$node.keystore.pem"
done
issue admin
password admin.password
password stream-ctr.password
password "$G/admin.password"

# Who reads what: brokers run as uid 1000 (apache/kafka), stream-ctr as 10001, Grafana as 472. The admin
# password is the brokers' (and the acls job's, which runs as 1000); stream-ctr's is its own and the brokers' (at
# format time); keys of the CA and of the admin certificate stay with root (docker compose run --rm secrets ...).
chmod 0644 ca.pem ./*.crt
chmod 0600 ca.key admin.key ./kafka-*.key
chown 1000:1000 ./kafka-*.keystore.pem admin.password && chmod 0400 ./kafka-*.keystore.pem admin.password
chown 10001:1000 stream-ctr.password && chmod 0440 stream-ctr.password
chown 472 "$G/admin.password" && chmod 0400 "$G/admin.password"
echo "secrets ready in /secrets (CA: /secrets/kafka/ca.pem)"
