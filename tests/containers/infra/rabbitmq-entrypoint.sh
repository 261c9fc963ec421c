#!/bin/sh
# RabbitMQ as the official image starts it: the default user from the environment, if set, plus
# the configuration files the chart mounts into /etc/rabbitmq/conf.d (which may name a
# definitions file mounted beside them; a node that loads definitions at boot creates no
# default user, whatever default_user says), and its log on the console. A cluster's nodes share
# the Erlang cookie, given as RABBITMQ_ERLANG_COOKIE (the official image's older variable; a
# Kubernetes operator mounts the file from a Secret instead), and name each other by
# RABBITMQ_NODENAME (rabbit@<hostname> by default).
set -eu
confd=/var/lib/rabbitmq/conf.d
mkdir -p "$confd"
{
    echo "listeners.tcp.default = 5672"
    echo "loopback_users = none"
    echo "log.console = true"
    echo "log.file = false"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
        echo "default_user = ${RABBITMQ_DEFAULT_USER}"
        echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-}"
    fi
} > "$confd/10-defaults.conf"
for file in /etc/rabbitmq/conf.d/*.conf; do
    [ -e "$file" ] && cp "$file" "$confd/"
done
if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
    # The package made one at install, read-only to its owner.
    rm -f "$HOME/.erlang.cookie"
    (umask 077 && printf '%s' "$RABBITMQ_ERLANG_COOKIE" > "$HOME/.erlang.cookie")
fi
export RABBITMQ_CONFIG_FILES="$confd"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
