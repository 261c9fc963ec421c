#!/bin/sh
# RabbitMQ as the official image starts it: the default user from the environment, plus the
# configuration files the chart mounts into /etc/rabbitmq/conf.d.
set -eu
confd=/var/lib/rabbitmq/conf.d
mkdir -p "$confd"
cat > "$confd/10-defaults.conf" <<CONF
listeners.tcp.default = 5672
default_user = ${RABBITMQ_DEFAULT_USER}
default_pass = ${RABBITMQ_DEFAULT_PASS}
loopback_users = none
CONF
for file in /etc/rabbitmq/conf.d/*.conf; do
    [ -e "$file" ] && cp "$file" "$confd/"
done
export RABBITMQ_CONFIG_FILES="$confd"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
