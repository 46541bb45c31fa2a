#!/usr/bin/env bash
# Builds LOCAL STAND-INS for the project's base images, for air-gapped hosts (this project's CI)
# where no container registry can be reached. The Dockerfile's ARG defaults are the one place that
# names the base images; this script reads the Debian suite and the Python minor version from them
# and makes each stand-in from that suite with debootstrap (this host's own apt mirror), under the
# official tag in the project's own namespace, never the official name itself, so that nothing else
# on the host builds on it by accident:
#
#   sentiment-local/python:3.11-slim-bookworm  for python:3.11-slim-bookworm (PYTHON_IMAGE): minbase
#                                              + apt python3 python3-pip python3-venv
#                                              ca-certificates; python, python3, pip, pip3 in
#                                              /usr/local/bin as in the official image, no
#                                              EXTERNALLY-MANAGED. Fails if the suite's python3 is
#                                              not the tag's minor version.
#   sentiment-local/debian:bookworm-slim       for debian:bookworm-slim (DEBIAN_IMAGE): plain minbase
#
# (the names above are today's defaults). The Dockerfile uses them only when asked to, through its
# base-image build arguments: `make docker-up OFFLINE_BASES=1`, or PYTHON_IMAGE / DEBIAN_IMAGE set
# to them. With --arch arm64 (on an amd64 host) the same two are built for linux/arm64 under
# emulation (qemu-user-static through binfmt_misc, installed here if missing), tagged with a
# -arm64 suffix, e.g. sentiment-local/debian:bookworm-slim-arm64.
#
# Both carry the LABEL org.sentiment.standin=1 (so tests/cleanup can tell them from real images)
# and THIS HOST's CA bundle, with PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE pointing at it, so
# pip and apt inside builds can get through a TLS-intercepting proxy. The host's non-Debian CAs are
# also placed in /usr/local/share/ca-certificates/, so a later update-ca-certificates in a derived
# image (installing Java triggers one) keeps them. Real registry images never get any of this.
# Earlier versions of this script tagged the stand-ins with the official names; such tags (they
# carry the label) are removed, so that the official images are pulled again where needed.
#
# Usage: .ci/build-base-images.sh [--arch amd64|arm64] [--force] [--refresh-rootfs] [--print-tags]
#   --arch ARCH       the stand-ins' architecture (default: this host's); a foreign one needs
#                     qemu-user-static (exit status 3 when emulation cannot be set up)
#   --force           rebuild images that already exist (default: skip them)
#   --refresh-rootfs  run debootstrap again instead of reusing the cached rootfs
#   --print-tags      print PYTHON_IMAGE=<stand-in> DEBIAN_IMAGE=<stand-in> and exit (no engine,
#                     no root: the Makefile and the tests take the names from here)
# Environment (optional):
#   SENTIMENT_BASE_CACHE   cache dir for the debootstrap rootfs (default /var/cache/sentiment-base)
#   SENTIMENT_APT_MIRROR   Debian mirror to use (default: read from /etc/apt/sources.list{,.d})
#
# Needs a running engine (.ci/docker-engine.sh) and root (debootstrap, chroot).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKERFILE="$HERE/../Dockerfile"
LABEL_KEY="org.sentiment.standin"
NAMESPACE="sentiment-local"
CACHE_DIR="${SENTIMENT_BASE_CACHE:-/var/cache/sentiment-base}"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The python3 that each Debian suite's apt installs (minor version): a Dockerfile default such as
# python:3.11-slim-trixie has no stand-in, since trixie's apt has Python 3.13 only. Checked again
# against the installed interpreter after apt.
declare -A APT_PYTHON3=([bookworm]=3.11 [trixie]=3.13)

log() { echo "build-base-images: $*"; }
die() { echo "build-base-images: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
ARCH="$HOST_ARCH"
FORCE=0
REFRESH=0
PRINT_TAGS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die "--arch needs a value (amd64 or arm64)"; ARCH="$2"; shift ;;
        --arch=*) ARCH="${1#--arch=}" ;;
        --force) FORCE=1 ;;
        --refresh-rootfs) REFRESH=1 ;;
        --print-tags) PRINT_TAGS=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-base-images: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$ARCH" in
    amd64|arm64) ;;
    *) die "unsupported --arch '$ARCH' (amd64 or arm64)" ;;
esac

# ---------------------------------------------------------------- names, from the Dockerfile
dockerfile_default() { # the default of a global `ARG NAME=value` of the Dockerfile
    sed -nE "s/^ARG $1=([^[:space:]]+)[[:space:]]*\$/\1/p" "$DOCKERFILE" | head -n 1
}
PY_OFFICIAL="$(dockerfile_default PYTHON_IMAGE)"
DEB_OFFICIAL="$(dockerfile_default DEBIAN_IMAGE)"
[ -n "$PY_OFFICIAL" ] && [ -n "$DEB_OFFICIAL" ] \
    || die "no 'ARG PYTHON_IMAGE=...' / 'ARG DEBIAN_IMAGE=...' default in $DOCKERFILE"
# python:3.11-slim-bookworm -> 3.11, bookworm; debian:bookworm-slim -> bookworm
[[ "$PY_OFFICIAL" =~ ^python:([0-9]+\.[0-9]+)-slim-([a-z]+)(@.*)?$ ]] \
    || die "PYTHON_IMAGE default '$PY_OFFICIAL' is not python:<major.minor>-slim-<suite>: name the Debian suite"
PY_MINOR="${BASH_REMATCH[1]}"
SUITE="${BASH_REMATCH[2]}"
[[ "$DEB_OFFICIAL" =~ ^debian:([a-z]+)-slim(@.*)?$ ]] \
    || die "DEBIAN_IMAGE default '$DEB_OFFICIAL' is not debian:<suite>-slim"
[ "${BASH_REMATCH[1]}" = "$SUITE" ] \
    || die "the Dockerfile's base images are of two suites: $PY_OFFICIAL and $DEB_OFFICIAL"
APT_PY="${APT_PYTHON3[$SUITE]:-}"
[ -n "$APT_PY" ] || die "no known apt python3 for Debian '$SUITE' (add it to APT_PYTHON3 in $0)"
[ "$APT_PY" = "$PY_MINOR" ] \
    || die "$PY_OFFICIAL wants Python $PY_MINOR, but Debian $SUITE's apt has python3 $APT_PY: no stand-in can be made from apt"
# The stand-in of an official tag: the same tag (digest dropped) in our namespace; a foreign
# architecture's gets its name as a suffix.
SUFFIX=""
[ "$ARCH" = "$HOST_ARCH" ] || SUFFIX="-$ARCH"
PY_TAG="$NAMESPACE/${PY_OFFICIAL%%@*}$SUFFIX"
DEB_TAG="$NAMESPACE/${DEB_OFFICIAL%%@*}$SUFFIX"

if [ "$PRINT_TAGS" -eq 1 ]; then
    echo "PYTHON_IMAGE=$PY_TAG DEBIAN_IMAGE=$DEB_TAG"
    exit 0
fi

# The official names that earlier versions of this script shadowed (suite-less then).
OFFICIAL_TAGS=("python:$PY_MINOR-slim" "debian:$SUITE-slim")
ROOTFS="$CACHE_DIR/$SUITE-minbase"
[ "$ARCH" = "$HOST_ARCH" ] || ROOTFS="$CACHE_DIR/$SUITE-$ARCH-minbase"
WORK="$CACHE_DIR/work-$ARCH"

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

# ---------------------------------------------------------------- a foreign architecture
# Its binaries run through user-mode QEMU, registered with binfmt_misc with the F flag (Debian's
# qemu-user-static does that), so that chroot, apt and `docker build` RUN steps all work.
unavailable() { echo "build-base-images: EMULATION UNAVAILABLE: $*" >&2; exit 3; }
ensure_emulation() {
    local qemu
    case "$ARCH" in arm64) qemu=qemu-aarch64 ;; *) qemu="qemu-$ARCH" ;; esac
    local entry="/proc/sys/fs/binfmt_misc/$qemu"
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
            || unavailable "cannot mount binfmt_misc (a container without that privilege?)"
    fi
    if [ ! -e "$entry" ]; then
        if ! dpkg -s qemu-user-static binfmt-support >/dev/null 2>&1; then
            log "installing qemu-user-static binfmt-support (to run $ARCH binaries)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support \
                >"$CACHE_DIR/apt-qemu.log" 2>&1 \
                || unavailable "apt-get install qemu-user-static binfmt-support failed (log: $CACHE_DIR/apt-qemu.log)"
        fi
        update-binfmts --enable "$qemu" >/dev/null 2>&1 || true
    fi
    [ "$(head -n 1 "$entry" 2>/dev/null)" = enabled ] || unavailable "$entry is not registered/enabled"
    grep -q '^flags:.*F' "$entry" \
        || unavailable "$qemu is registered without the F flag: containers could not find the interpreter"
    log "emulation: $qemu via $(sed -n 's/^interpreter //p' "$entry")"
}
# Builds an image for linux/$ARCH: `docker import` cannot label the architecture (it says the
# host's), a BuildKit build can. Prints the builder's command line.
foreign_builder() {
    if docker buildx version >/dev/null 2>&1; then
        echo "docker buildx build --load"
    elif [ -x /usr/bin/docker ] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help 2>/dev/null | grep -q -- '--platform'; then
        echo "env DOCKER_BUILDKIT=1 /usr/bin/docker build"   # Debian's docker.io client: BuildKit built in
    else
        unavailable "no BuildKit client (docker buildx, or Debian's /usr/bin/docker) to label a $ARCH image"
    fi
}
if [ "$ARCH" != "$HOST_ARCH" ]; then
    mkdir -p "$CACHE_DIR"
    ensure_emulation
    FOREIGN_BUILD="$(foreign_builder)"
fi

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
    dlog="$CACHE_DIR/debootstrap-$ARCH.log"
    log "debootstrap --arch=$ARCH --variant=minbase $SUITE into $ROOTFS (log: $dlog)"
    if ! nice -n 10 debootstrap --arch="$ARCH" --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" \
            >"$dlog" 2>&1; then
        tail -n 20 "$dlog" >&2
        die "debootstrap failed; full log: $dlog"
    fi
    echo "$MIRROR $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$ROOTFS.tmp/.debootstrap-ok"
    mv "$ROOTFS.tmp" "$ROOTFS"
    TIMINGS+=("debootstrap $ARCH minbase: $(since "$t0") s")
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

import_root() { # import_root ROOT TAG CMD-JSON
    local root="$1" tag="$2" cmd="$3"
    local old_id new_id t0
    old_id="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
    t0=$(now)
    local config=(
        "ENV PATH=$STD_PATH"
        "ENV LANG=C.UTF-8"
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
        "LABEL $LABEL_KEY=1 $LABEL_KEY.source=debootstrap-$SUITE-$ARCH-minbase"
        "CMD $cmd"
    )
    if [ "$ARCH" = "$HOST_ARCH" ]; then
        local changes=() c
        for c in "${config[@]}"; do changes+=(-c "$c"); done
        tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
            | docker import "${changes[@]}" -m "local stand-in for $tag (debootstrap $SUITE minbase)" - "$tag" >/dev/null
    else
        # FROM scratch + ADD of the rootfs tarball (ADD unpacks it), labelled linux/$ARCH.
        local ctx="$WORK/context"
        rm -rf --one-file-system "$ctx"
        mkdir -p "$ctx"
        tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -cf "$ctx/rootfs.tar" .
        { echo "FROM scratch"; echo "ADD rootfs.tar /"; printf '%s\n' "${config[@]}"; } >"$ctx/Dockerfile"
        $FOREIGN_BUILD --quiet --platform "linux/$ARCH" -t "$tag" "$ctx" >"$WORK/build-$ARCH.log" 2>&1 \
            || { tail -n 20 "$WORK/build-$ARCH.log" >&2; die "building $tag failed"; }
        rm -rf --one-file-system "$ctx"
        [ "$(docker image inspect -f '{{.Architecture}}' "$tag")" = "$ARCH" ] \
            || die "$tag says architecture $(docker image inspect -f '{{.Architecture}}' "$tag"), not $ARCH"
    fi
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
    # Where the official image has them (its Python is built into /usr/local): python, python3,
    # pythonX.Y, pip, pip3, pipX.Y on PATH in /usr/local/bin. No EXTERNALLY-MANAGED, as there.
    local name
    for name in python python3 "python$PY_MINOR"; do ln -sf /usr/bin/python3 "$root/usr/local/bin/$name"; done
    for name in pip pip3 "pip$PY_MINOR"; do ln -sf /usr/bin/pip3 "$root/usr/local/bin/$name"; done
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    install_host_ca "$root"
    # Rebuild the bundle the Debian way (now including the host's extra CAs), then lay the host's
    # bundle over it exactly.
    in_root "$root" update-ca-certificates >/dev/null 2>&1 || true
    cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
    in_root "$root" apt-get clean
    finish_root "$root"
    local got
    got="$(in_root "$root" python -c 'import sys, ssl, venv, pip; print("%d.%d" % sys.version_info[:2])')" \
        || die "python in the $SUITE rootfs does not work (import ssl, venv, pip)"
    [ "$got" = "$PY_MINOR" ] \
        || die "Debian $SUITE's python3 is $got, but $PY_OFFICIAL is Python $PY_MINOR: fix APT_PYTHON3 or the Dockerfile's default"
    import_root "$root" "$PY_TAG" '["python3"]'
}

for tag in "${todo[@]}"; do
    case "$tag" in
        "$PY_TAG") build_python ;;
        "$DEB_TAG") build_debian ;;
    esac
done

print_summary
