#!/usr/bin/env bash
# Builds LOCAL STAND-INS for the project's base images, for air-gapped hosts (this project's CI)
# where no container registry can be reached. Each is a Debian bookworm minbase made with
# debootstrap from this host's own apt mirror and loaded with `docker import`, under a tag of the
# project's own namespace, never an official image's name, so that nothing else on the host
# builds on it by accident. The Dockerfile uses them only when asked to, through its base-image
# build arguments: `make docker-up OFFLINE_BASES=1`, or PYTHON_IMAGE / DEBIAN_IMAGE set to them.
#
#   sentiment-local/python:3.11-slim       for python:3.11-slim (PYTHON_IMAGE): minbase + apt
#                                          python3 python3-pip python3-venv ca-certificates (3.11),
#                                          /usr/local/bin/python -> python3, pip -> pip3, no
#                                          EXTERNALLY-MANAGED
#   sentiment-local/debian:bookworm-slim   for debian:bookworm-slim (DEBIAN_IMAGE): plain minbase
#
# Both carry the LABEL org.sentiment.standin=1 (so tests/cleanup can tell them from real images)
# and THIS HOST's CA bundle, with PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE pointing at it, so
# pip and apt inside builds can get through a TLS-intercepting proxy. The host's non-Debian CAs are
# also placed in /usr/local/share/ca-certificates/, so a later update-ca-certificates in a derived
# image (installing Java triggers one) keeps them. Real registry images never get any of this.
# Earlier versions of this script tagged the stand-ins with the official names; such tags (they
# carry the label) are removed, so that the official images are pulled again where needed.
#
# Usage: .ci/build-base-images.sh [--force] [--refresh-rootfs]
#   --force           rebuild images that already exist (default: skip them)
#   --refresh-rootfs  run debootstrap again instead of reusing the cached rootfs
# Environment (optional):
#   SENTIMENT_BASE_CACHE   cache dir for the debootstrap rootfs (default /var/cache/sentiment-base)
#   SENTIMENT_APT_MIRROR   Debian mirror to use (default: read from /etc/apt/sources.list{,.d})
#
# Needs a running engine (.ci/docker-engine.sh) and root (debootstrap, chroot).
set -euo pipefail

SUITE=bookworm
PY_TAG="sentiment-local/python:3.11-slim"
DEB_TAG="sentiment-local/debian:bookworm-slim"
# The official names that earlier versions of this script shadowed.
OFFICIAL_TAGS=("python:3.11-slim" "debian:bookworm-slim")
LABEL_KEY="org.sentiment.standin"
CACHE_DIR="${SENTIMENT_BASE_CACHE:-/var/cache/sentiment-base}"
ROOTFS="$CACHE_DIR/$SUITE-minbase"
WORK="$CACHE_DIR/work"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

FORCE=0
REFRESH=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --refresh-rootfs) REFRESH=1 ;;
        -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-base-images: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "build-base-images: $*"; }
die() { echo "build-base-images: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

T_START=$(now)
TIMINGS=()

# ---------------------------------------------------------------- preconditions
command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1 \
    || die "no Docker engine answers 'docker info'. Start one first: bash .ci/docker-engine.sh"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

for tag in "${OFFICIAL_TAGS[@]}"; do
    if [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$tag" 2>/dev/null)" = 1 ]; then
        log "$tag on this host is a stand-in an earlier version of this script made; removing that tag"
        docker image rm "$tag" >/dev/null || log "  could not remove $tag (in use?); remove it yourself: docker image rm $tag"
    fi
done

todo=()
for tag in "$PY_TAG" "$DEB_TAG"; do
    if image_exists "$tag" && [ "$FORCE" -eq 0 ]; then
        kind="stand-in"
        [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$tag" 2>/dev/null)" = 1 ] \
            || kind="NOT a stand-in (no $LABEL_KEY label)"
        log "$tag already exists ($kind); skipping (use --force to rebuild)"
    else
        todo+=("$tag")
    fi
done

print_summary() {
    log "timings:"
    local t
    for t in "${TIMINGS[@]}"; do echo "    $t"; done
    echo "    total: $(since "$T_START") s"
    log "images:"
    docker images --filter "label=$LABEL_KEY=1" \
        --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}  (created {{.CreatedSince}})' | sed 's/^/    /'
}

if [ ${#todo[@]} -eq 0 ]; then
    print_summary
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building needs root (debootstrap, chroot); re-run as root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap missing; run: bash .ci/docker-engine.sh (installs it)"
[ -s "$HOST_CA" ] || die "no CA bundle at $HOST_CA (apt install ca-certificates)"

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock -n 9 || { log "another build holds $CACHE_DIR/.lock; waiting"; flock 9; }

cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------- apt sources of this host
# Prints the first URI whose suites include $1, from one-line (.list) and deb822 (.sources) files.
find_mirror() {
    local suite="$1" f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) { print $i; found = 1; exit }
            }
            END { exit !found }' "$f" && return 0
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    k = line; sub(/:.*/, "", k); k = tolower(k)
                    v = line; sub(/^[^:]*:[ \t]*/, "", v)
                    if (k == "types") types = v
                    else if (k == "uris") uris = v
                    else if (k == "suites") suites = v
                    else if (k == "enabled") enabled = tolower(v)
                }
                if (enabled == "no") next
                if ((" " types " ") !~ / deb /) next
                if ((" " suites " ") ~ (" " want " ")) { split(uris, u, " "); print u[1]; found = 1; exit }
            }
            END { exit !found }' "$f" && return 0
    done
    return 1
}

MIRROR="${SENTIMENT_APT_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR="$(find_mirror "$SUITE")" \
        || die "no 'deb ... $SUITE' entry in /etc/apt/sources.list{,.d}; set SENTIMENT_APT_MIRROR=<debian mirror URL>"
fi
SECURITY_MIRROR="$(find_mirror "$SUITE-security" || true)"
log "apt mirror: $MIRROR${SECURITY_MIRROR:+ (security: $SECURITY_MIRROR)}"

# ---------------------------------------------------------------- cached debootstrap rootfs
if [ "$REFRESH" -eq 1 ] || [ ! -f "$ROOTFS/.debootstrap-ok" ]; then
    t0=$(now)
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.tmp"
    log "debootstrap --variant=minbase $SUITE into $ROOTFS (log: $CACHE_DIR/debootstrap.log)"
    if ! nice -n 10 debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" \
            >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        die "debootstrap failed; full log: $CACHE_DIR/debootstrap.log"
    fi
    echo "$MIRROR $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$ROOTFS.tmp/.debootstrap-ok"
    mv "$ROOTFS.tmp" "$ROOTFS"
    TIMINGS+=("debootstrap minbase: $(since "$t0") s")
else
    log "reusing cached rootfs $ROOTFS (made $(cut -d' ' -f2 "$ROOTFS/.debootstrap-ok"); --refresh-rootfs to redo)"
    TIMINGS+=("debootstrap minbase: cached")
fi

# ---------------------------------------------------------------- rootfs helpers
in_root() { # run a command inside a rootfs with a clean environment (no host PIP_*/proxy vars)
    local root="$1"; shift
    env -i PATH="$STD_PATH" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        nice -n 10 chroot "$root" "$@"
}

# Host CAs that are not part of Debian's ca-certificates set (e.g. a TLS proxy's CA), one PEM
# file each, written to $1/standin-host-ca-N.crt.
write_host_extra_cas() {
    local dest="$1"
    [ -d /usr/share/ca-certificates ] || { log "warning: host has no /usr/share/ca-certificates; skipping extra CA split"; return 0; }
    mkdir -p "$dest"
    local keys='/-----BEGIN CERTIFICATE-----/ { c = ""; on = 1; next }
                /-----END CERTIFICATE-----/ { if (on) print c; on = 0; next }
                on { gsub(/[ \t\r]/, ""); c = c $0 }'
    local debian_keys n=0 key
    debian_keys="$(find /usr/share/ca-certificates -name '*.crt' -exec cat {} + | awk "$keys" | LC_ALL=C sort -u)"
    while IFS= read -r key; do
        [ -n "$key" ] || continue
        n=$((n + 1))
        { echo "-----BEGIN CERTIFICATE-----"; echo "$key" | fold -w 64; echo "-----END CERTIFICATE-----"; } \
            >"$dest/standin-host-ca-$n.crt"
    done < <(awk "$keys" "$HOST_CA" | LC_ALL=C sort -u | LC_ALL=C comm -23 - <(echo "$debian_keys"))
    log "  $n host CA(s) outside Debian's set -> /usr/local/share/ca-certificates/standin-host-ca-*.crt"
}

# Every rootfs we modify must be a directory under $WORK; never the host's /.
check_work_root() {
    case "$1" in
        "$WORK"/?*) ;;
        *) die "internal error: refusing to modify '$1' (not under $WORK)" ;;
    esac
}

prepare_root() { # copy the cached minbase and apply what both stand-ins share
    local root="$1"
    check_work_root "$root"
    rm -rf --one-file-system "$root"
    mkdir -p "$(dirname "$root")"
    cp -a "$ROOTFS" "$root"
    rm -f "$root/.debootstrap-ok" "$root/var/log/bootstrap.log"
    # apt sources as in the official image (main suite, updates, security), from this host's mirror
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$MIRROR" "$SUITE" "$SUITE"
        if [ -n "$SECURITY_MIRROR" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$SECURITY_MIRROR" "$SUITE"
        fi
    } >"$root/etc/apt/sources.list.d/debian.sources"
    rm -f "$root/etc/apt/sources.list"
    # Keep apt from leaving .debs, pkgcaches and translations in image layers (as the official
    # images do with their docker-* apt.conf.d snippets).
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'APT::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    # Slim like the official *-slim images: no docs (but copyrights), man pages, info, locales,
    # now and for every package a derived image installs later.
    printf '%s\n' \
        'path-exclude /usr/share/doc/*' \
        'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/groff/*' \
        'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/linda/*' \
        'path-exclude /usr/share/lintian/overrides/*' \
        'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/man/*' >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
    local d
    for d in doc groff info linda lintian/overrides locale man; do
        [ -d "$root/usr/share/$d" ] || continue
        if [ "$d" = doc ]; then
            find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
            find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
        else
            find "$root/usr/share/$d" -mindepth 1 -delete
        fi
    done
    # No service starts during apt inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    # DNS for apt inside the chroot (debootstrap copied the host's; refresh it, removed at the end)
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
}

install_host_ca() {
    local root="$1"
    write_host_extra_cas "$root/usr/local/share/ca-certificates"
    mkdir -p "$root/etc/ssl/certs"
    cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
}

finish_root() { # strip what must not end up in the image
    local root="$1"
    check_work_root "$root"
    rm -f "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/cache/apt/archives/partial/* "$root"/var/log/apt/* "$root"/root/.cache
    : >"$root/etc/resolv.conf"          # Docker provides resolv.conf/hosts/hostname at run time
    echo localhost >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
}

import_root() { # import_root ROOT TAG CMD-JSON [extra -c changes...]
    local root="$1" tag="$2" cmd="$3"; shift 3
    local old_id new_id t0
    old_id="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
    t0=$(now)
    local changes=(
        -c "ENV PATH=$STD_PATH"
        -c "ENV LANG=C.UTF-8"
        -c "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        -c "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
        -c "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
        -c "LABEL $LABEL_KEY=1 $LABEL_KEY.source=debootstrap-$SUITE-minbase"
        -c "CMD $cmd"
    )
    for c in "$@"; do changes+=(-c "$c"); done
    tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
        | docker import "${changes[@]}" -m "local stand-in for $tag (debootstrap $SUITE minbase)" - "$tag" >/dev/null
    new_id="$(docker image inspect -f '{{.Id}}' "$tag")"
    TIMINGS+=("import $tag: $(since "$t0") s")
    # --force leaves the previous stand-in untagged; drop it if nothing uses it.
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] \
        && [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$old_id" 2>/dev/null)" = 1 ] \
        && [ -z "$(docker image inspect -f '{{join .RepoTags ","}}' "$old_id" 2>/dev/null)" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || log "  (previous $tag image ${old_id:7:12} still in use; left in place)"
    fi
    log "$tag -> ${new_id:7:12}"
}

# ---------------------------------------------------------------- images
build_debian() {
    local root="$WORK/debian" t0
    t0=$(now)
    log "building $DEB_TAG"
    prepare_root "$root"
    install_host_ca "$root"
    finish_root "$root"
    TIMINGS+=("prepare $DEB_TAG rootfs: $(since "$t0") s")
    import_root "$root" "$DEB_TAG" '["bash"]'
}

build_python() {
    local root="$WORK/python" t0
    t0=$(now)
    log "building $PY_TAG (apt: python3 python3-pip python3-venv ca-certificates)"
    prepare_root "$root"
    in_root "$root" apt-get update -qq
    in_root "$root" apt-get install -y -qq --no-install-recommends \
        python3 python3-pip python3-venv ca-certificates >"$WORK/apt-python.log" 2>&1 \
        || { tail -n 20 "$WORK/apt-python.log" >&2; die "apt-get install in the python rootfs failed"; }
    TIMINGS+=("apt install python3 (chroot): $(since "$t0") s")
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    install_host_ca "$root"
    # Rebuild the bundle the Debian way (now including the host's extra CAs), then lay the host's
    # bundle over it exactly.
    in_root "$root" update-ca-certificates >/dev/null 2>&1 || true
    cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
    in_root "$root" apt-get clean
    finish_root "$root"
    in_root "$root" python3 -c 'import sys, ssl, venv, pip; assert sys.version_info[:2] == (3, 11), sys.version' \
        || die "python3 in the rootfs is not a working 3.11"
    import_root "$root" "$PY_TAG" '["python3"]'
}

for tag in "${todo[@]}"; do
    case "$tag" in
        "$PY_TAG") build_python ;;
        "$DEB_TAG") build_debian ;;
    esac
done

print_summary
