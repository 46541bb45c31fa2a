#!/usr/bin/env bash
# Makes sure a Docker engine is available on a Debian host without systemd, idempotently: the
# project's air-gapped CI runs on such hosts (`make docker-engine`). A host whose Docker runs
# under systemd (or Docker Desktop) needs none of it.
#
#   .ci/docker-engine.sh [ensure]   install docker.io & co. if dockerd is missing, the Compose v2
#                                   plugin if `docker compose` is missing, start dockerd
#                                   in the background if `docker info` does not answer, wait
#                                   until it is ready, print the docker/compose versions in use
#   .ci/docker-engine.sh stop       stop the dockerd that THIS script started (pid file); a
#                                   daemon started any other way is left alone
#   .ci/docker-engine.sh status     say whether the engine answers and who started it
#
# Environment (all optional):
#   SENTIMENT_DOCKER_RUN_DIR   where the pid file and log live (default /var/run/sentiment-docker)
#   SENTIMENT_DOCKER_TIMEOUT   seconds to wait for `docker info` after starting dockerd (default 30)
#
# Nothing is exported or written to shell profiles; this only runs commands.
set -euo pipefail

RUN_DIR="${SENTIMENT_DOCKER_RUN_DIR:-/var/run/sentiment-docker}"
PID_FILE="$RUN_DIR/dockerd.pid"
LOG_FILE="$RUN_DIR/dockerd.log"
TIMEOUT="${SENTIMENT_DOCKER_TIMEOUT:-30}"
PACKAGES=(docker.io docker-compose debootstrap iptables ca-certificates)

log() { echo "docker-engine: $*"; }
die() { echo "docker-engine: ERROR: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (re-run as root or with sudo)"
}

# `docker info` with whichever client is first on PATH; bounded so a wedged socket cannot hang us.
engine_answers() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 10 docker info >/dev/null 2>&1
}

# PID from our pid file, but only if that process is alive and really is dockerd.
our_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "dockerd" ] || return 1
    echo "$pid"
}

# A dockerd started by someone else (e.g. still starting up) that holds Docker's own pid file.
foreign_dockerd_pid() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "dockerd" ] || return 1
    echo "$pid"
}

install_packages() {
    local missing=0
    command -v dockerd >/dev/null 2>&1 || missing=1
    command -v docker-compose >/dev/null 2>&1 || missing=1
    command -v debootstrap >/dev/null 2>&1 || missing=1
    command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing=1
    [ -s /etc/ssl/certs/ca-certificates.crt ] || missing=1
    [ "$missing" -eq 1 ] || return 0

    need_root "installing ${PACKAGES[*]}"
    log "installing ${PACKAGES[*]} (apt, --no-install-recommends)"
    local t0=$SECONDS policy_created=0
    # Without systemd, the docker.io postinst could start the daemon through its init script; we
    # start it ourselves below, so block service starts during the install unless a policy exists.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    if [ "$policy_created" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    command -v dockerd >/dev/null 2>&1 || die "apt finished but dockerd is still not on PATH"
    log "packages installed in $((SECONDS - t0)) s"
}

# Compose v2 (`docker compose`), what Docker's own packages and Docker Desktop bring, is the
# Compose the project documents first. Debian 12 packages only Compose 1.29 (`docker-compose`), so
# on such a host the v2 plugin comes from the next Debian suite's docker-compose package (a static
# binary): only the plugin is unpacked, into /usr/local/lib/docker/cli-plugins, and Debian's 1.29
# stays `docker-compose`.
COMPOSE_V2_SUITE="${SENTIMENT_COMPOSE_V2_SUITE:-trixie}"
COMPOSE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

install_compose_v2() {
    docker compose version >/dev/null 2>&1 && return 0
    need_root "installing the Compose v2 plugin"
    local mirror work t0=$SECONDS
    # The host's own Debian mirror, as apt knows it.
    mirror="$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null \
        | grep -m1 -E '/debian/?$' || true)"
    [ -n "$mirror" ] || die "no Debian mirror in this host's apt sources to fetch Compose v2 from"
    work="$(mktemp -d)"
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    echo "deb $mirror $COMPOSE_V2_SUITE main" >"$work/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives" -o Debug::NoLocking=1)
    log "installing the Compose v2 plugin from Debian $COMPOSE_V2_SUITE's docker-compose package ($mirror)"
    apt-get "${apt_opts[@]}" update -qq \
        && (cd "$work" && apt-get "${apt_opts[@]}" download -qq docker-compose 2>/dev/null) \
        || { rm -rf "$work"; die "could not download docker-compose from $mirror $COMPOSE_V2_SUITE"; }
    dpkg -x "$work"/docker-compose_*.deb "$work/root"
    install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_PLUGIN_DIR/docker-compose"
    rm -rf "$work"
    docker compose version >/dev/null 2>&1 || die "the Compose v2 plugin in $COMPOSE_PLUGIN_DIR does not run"
    log "Compose $(docker compose version --short) installed in $((SECONDS - t0)) s"
}

start_dockerd() {
    need_root "starting dockerd"
    mkdir -p "$RUN_DIR"
    local pid
    if pid="$(foreign_dockerd_pid)"; then
        log "a dockerd (pid $pid) not started by this script is already running; waiting for it"
    else
        log "starting dockerd in the background (log: $LOG_FILE)"
        {
            echo "==== $(date -u +%Y-%m-%dT%H:%M:%SZ) docker-engine.sh starting dockerd ===="
        } >>"$LOG_FILE"
        # setsid: own session, so the daemon outlives this script and its terminal/job group.
        setsid dockerd >>"$LOG_FILE" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$PID_FILE"
    fi

    local deadline=$((SECONDS + TIMEOUT))
    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            echo "---- last lines of $LOG_FILE ----" >&2
            tail -n 25 "$LOG_FILE" >&2 || true
            die "dockerd (pid $pid) exited before answering; full log: $LOG_FILE"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "---- last lines of $LOG_FILE ----" >&2
            tail -n 25 "$LOG_FILE" >&2 || true
            die "'docker info' did not answer within ${TIMEOUT}s (dockerd pid $pid still running); log: $LOG_FILE"
        fi
        sleep 0.25
    done
    log "dockerd ready (pid $pid)"
}

print_versions() {
    local client client_ver server_ver api compose
    client="$(command -v docker)"
    client_ver="$(docker version --format '{{.Client.Version}}' 2>/dev/null || echo '?')"
    server_ver="$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
    api="$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || echo '?')"
    log "docker client in use: $client (version $client_ver)"
    if [ "$client" != /usr/bin/docker ] && [ -x /usr/bin/docker ]; then
        log "  (Debian's own client is /usr/bin/docker, version $(/usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null || echo '?'))"
    fi
    log "docker engine: $server_ver (API $api)"
    if docker compose version >/dev/null 2>&1; then
        log "compose in use: 'docker compose' $(docker compose version --short 2>/dev/null) (v2 plugin; builds with BuildKit)"
    fi
    if compose="$(command -v docker-compose)"; then
        log "  also: $compose $(docker-compose version --short 2>/dev/null || echo '?') (Compose 1.29; builds with the legacy builder)"
    fi
    if docker buildx version >/dev/null 2>&1; then
        log "  buildx available: $(docker buildx version 2>/dev/null | head -n1)"
    else
        log "  no buildx: use Debian's /usr/bin/docker for DOCKER_BUILDKIT=1, or the legacy builder"
    fi
}

cmd_ensure() {
    install_packages
    install_compose_v2
    if engine_answers; then
        local pid
        if pid="$(our_pid)"; then
            log "engine already running (dockerd pid $pid, started by this script)"
        else
            log "engine already running (not started by this script)"
        fi
    else
        # The client first on PATH may be newer than the 20.10 engine; make sure it is not the
        # client that fails while the daemon is fine.
        if [ -x /usr/bin/docker ] && timeout 10 /usr/bin/docker info >/dev/null 2>&1; then
            die "the engine answers /usr/bin/docker but not '$(command -v docker)'; check DOCKER_HOST/contexts"
        fi
        start_dockerd
    fi
    engine_answers || die "'$(command -v docker) info' fails against the running engine"
    print_versions
}

cmd_stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PID_FILE"
        log "no dockerd started by this script is running; nothing to stop"
        return 0
    fi
    need_root "stopping dockerd"
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "dockerd (pid $pid) still running 30s after SIGTERM; log: $LOG_FILE"
        sleep 0.25
    done
    rm -f "$PID_FILE"
    log "dockerd stopped"
}

cmd_status() {
    local pid
    if engine_answers; then
        if pid="$(our_pid)"; then
            log "running (dockerd pid $pid, started by this script; log: $LOG_FILE)"
        else
            log "running (not started by this script)"
        fi
        print_versions
    else
        log "not running"
        return 1
    fi
}

case "${1:-ensure}" in
    ensure) cmd_ensure ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h|--help|help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (use: ensure | stop | status)" ;;
esac
