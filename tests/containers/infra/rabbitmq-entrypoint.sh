#!/bin/sh
# RabbitMQ as the official image starts it: the default user from the environment, if set, plus
# the configuration files the chart mounts into /etc/rabbitmq/conf.d (which may name a
# definitions file mounted beside them; a node that loads definitions at boot creates no
# default user, whatever default_user says).
set -eu
confd=/var/lib/rabbitmq/conf.d
mkdir -p "$confd"
{
    echo "listeners.tcp.default = 5672"
    echo "loopback_users = none"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
        echo "default_user = ${RABBITMQ_DEFAULT_USER}"
        echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-}"
    fi
} > "$confd/10-defaults.conf"
for file in /etc/rabbitmq/conf.d/*.conf; do
    [ -e "$file" ] && cp "$file" "$confd/"
done
export RABBITMQ_CONFIG_FILES="$confd"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
