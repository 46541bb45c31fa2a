#!/bin/sh
# Entrypoint of the sentiment-nginx image: render nginx.conf.template, then exec nginx as PID 1.
#
# Every ${NGINX_*} variable in the environment is substituted (the image's ENV and $NGINX_DEFAULTS
# give each placeholder of the template a default; any can be overridden with `environment:`), so a new
# placeholder needs only its ENV default in the Dockerfile, not an edit here. nginx's own
# $variables survive, since only NGINX_* names are handed to envsubst. Every placeholder the
# template uses must be set and non-empty, or the container stops with their names.
#
# The config is written to $NGINX_RUN_DIR (default /tmp/nginx), the one place the unprivileged
# nginx user writes to, along with nginx's pid file and temp dirs. nginx logs to the container's
# stdout/stderr.
set -eu

TEMPLATE="${NGINX_TEMPLATE:-/etc/sentiment-nginx/nginx.conf.template}"
: "${NGINX_RUN_DIR:?}"
CONFIG="$NGINX_RUN_DIR/nginx.conf"

# The tunables' defaults (nginx/defaults.env, NAME=value lines) fill every one that is unset or
# empty: Compose passes an unset setting on as an empty variable.
if [ -n "${NGINX_DEFAULTS:-}" ]; then
    while IFS='=' read -r name value; do
        case "$name" in
            NGINX_[A-Za-z0-9_]*) ;;
            *) continue ;;
        esac
        eval "current=\${$name-}"
        # shellcheck disable=SC2154 # set by the eval above
        if [ -z "$current" ]; then
            export "$name=$value"
        fi
    done <"$NGINX_DEFAULTS"
fi

# The placeholders the template uses, each one checked.
missing=
for name in $(grep -o '\${NGINX_[A-Za-z0-9_]*}' "$TEMPLATE" | tr -d '${}' | sort -u); do
    eval "value=\${$name-}"
    # shellcheck disable=SC2154 # set by the eval above
    if [ -z "$value" ]; then
        missing="$missing $name"
    fi
done
if [ -n "$missing" ]; then
    echo "error: $TEMPLATE needs these variables set (non-empty):$missing" >&2
    exit 1
fi

# The NGINX_* names in the environment, as envsubst's SHELL-FORMAT list (awk reads the names
# from ENVIRON, so a value with a newline in it cannot smuggle in a name).
names=$(awk 'BEGIN { for (name in ENVIRON) if (name ~ /^NGINX_[A-Za-z0-9_]+$/) printf "${%s} ", name }')

mkdir -p "$NGINX_RUN_DIR"
envsubst "$names" <"$TEMPLATE" >"$CONFIG.tmp"
mv "$CONFIG.tmp" "$CONFIG"

# Arguments replace the default command after rendering, e.g. to check the rendered config:
#   docker run --rm sentiment-nginx nginx -t -e stderr -c /tmp/nginx/nginx.conf
# Without arguments nginx runs in the foreground as PID 1.
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
# -e stderr: nginx opens its compiled-in error log before it reads the config.
exec nginx -c "$CONFIG" -e stderr -g 'daemon off;'
