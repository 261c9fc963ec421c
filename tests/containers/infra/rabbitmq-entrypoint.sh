#!/bin/sh
# RabbitMQ as the official image starts it: the default user from the environment.
set -eu
conf=/var/lib/rabbitmq/lantern.conf
cat > "$conf" <<CONF
listeners.tcp.default = 5672
default_user = ${RABBITMQ_DEFAULT_USER}
default_pass = ${RABBITMQ_DEFAULT_PASS}
loopback_users = none
CONF
export RABBITMQ_CONFIG_FILE="$conf"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
