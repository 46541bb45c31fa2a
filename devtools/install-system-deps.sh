#!/usr/bin/env bash
# Installs the system packages of one set, only where they are missing. Needs root (or sudo) on a
# Debian/Ubuntu host.
#
#   devtools/install-system-deps.sh service PYTHON
#       what the native stack needs (`make install`): a Java runtime of version 17 or later for
#       TorchServe (the suite's openjdk-17 where it has one, as Debian 12 and Ubuntu 24.04 do, else
#       openjdk-21, as on Debian 13), nginx, procps (TorchServe's frontend runs `kill` to stop a
#       worker), and the venv module of PYTHON (Debian splits it into python3.X-venv)
#   devtools/install-system-deps.sh test
#       what the tests and load tools add (`make install-dev`): wrk, and headless Chromium with its
#       WebDriver
set -euo pipefail

# TorchServe 0.12's frontend needs Java 17 or later.
JAVA_MIN=17

say() { echo "install-system-deps: $*"; }

# The major version of the `java` on PATH (17 for "17.0.15", 1 for "1.8.0"), empty without one.
java_major() {
    command -v java >/dev/null 2>&1 || return 0
    java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'
}

# Whether PYTHON can make a venv with pip in it (Debian's python3 without python3.X-venv cannot,
# and leaves a half-made venv behind when asked to).
python_makes_venvs() {
    local tmp ok=1
    tmp="$(mktemp -d)"
    "$1" -m venv "$tmp/venv" >/dev/null 2>&1 && "$tmp/venv/bin/python" -m pip --version >/dev/null 2>&1 && ok=0
    rm -rf "$tmp"
    return $ok
}

# The first of the packages that the host's apt sources offer: one with an installation candidate
# (`apt-cache show` also knows names that other packages merely mention, such as Debian 13's
# openjdk-17-jre-headless).
first_available() {
    local package policy
    for package in "$@"; do
        # Read whole before matching: `grep -q` stops reading early, and under pipefail the
        # SIGPIPE that apt-cache then gets would read as "not available".
        policy="$(LC_ALL=C apt-cache policy "$package" 2>/dev/null)"
        if grep -qE '^ +Candidate: [^(]' <<<"$policy"; then
            echo "$package"
            return 0
        fi
    done
    return 1
}

missing=()          # packages to install
choose_java=0       # install the suite's JRE (picked once apt's lists are fresh)
choose_nginx=0      # install nginx (likewise: nginx-light where the suite still has it)
case "${1:-}" in
    service)
        python="${2:-}"
        [ -n "$python" ] || { say "say which Python the venv is made with: service PYTHON" >&2; exit 2; }
        major="$(java_major)"
        if [ -z "$major" ] || [ "$major" -lt "$JAVA_MIN" ]; then
            say "TorchServe needs Java $JAVA_MIN or later; found ${major:+Java $major}${major:-no java on PATH}"
            choose_java=1
        fi
        command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || choose_nginx=1
        [ -x /usr/bin/kill ] || [ -x /bin/kill ] || missing+=(procps)
        if ! python_makes_venvs "$python"; then
            version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            missing+=("python$version-venv")
        fi
        ;;
    test)
        # The load generator of make bench, make soak and the CI-sized soak test.
        command -v wrk >/dev/null 2>&1 || missing+=(wrk)
        # Only the browser test (tests/integration/test_browser.py) needs these: headless Chromium and
        # its WebDriver from Debian's own packages, so no test downloads a browser. WITH_TEST_BROWSER=0
        # skips them (the test then skips itself). Ubuntu ships Chromium only as a snap, not used here.
        if [ "${WITH_TEST_BROWSER:-1}" != 0 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
            if grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
                missing+=(chromium chromium-driver)
            else
                say "no /usr/bin/chromium + /usr/bin/chromedriver; the browser test will be skipped" >&2
            fi
        fi
        ;;
    *)
        say "say which set to install: service PYTHON (make install) or test (make install-dev)" >&2
        exit 2
        ;;
esac

if [ ${#missing[@]} -eq 0 ] && [ "$choose_java" -eq 0 ] && [ "$choose_nginx" -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root or sudo to install: ${missing[*]}$([ "$choose_java" -eq 1 ] && echo ' a Java runtime')$([ "$choose_nginx" -eq 1 ] && echo ' nginx')" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
$sudo apt-get update -qq
if [ "$choose_nginx" -eq 1 ]; then
    # Debian 12 and 13 have nginx-light (the smallest build); a suite without it gets nginx.
    nginx="$(first_available nginx-light nginx)" \
        || { say "this host's apt sources offer no nginx package; install nginx yourself" >&2; exit 1; }
    missing+=("$nginx")
fi
if [ "$choose_java" -eq 1 ]; then
    jre="$(first_available "openjdk-$JAVA_MIN-jre-headless" openjdk-21-jre-headless openjdk-25-jre-headless)" \
        || { say "this host's apt sources offer no openjdk-17/21/25-jre-headless; install Java $JAVA_MIN or later yourself" >&2; exit 1; }
    missing+=("$jre")
    # The JRE's postinst registers its man pages there; slim images (Docker's, and the
    # minbase of the clean-machine test) leave the directory out.
    $sudo mkdir -p /usr/share/man/man1
fi
say "installing ${missing[*]} (apt)"
apt_log="$(mktemp)"
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    say "apt-get install ${missing[*]} failed (its last lines above)" >&2
    exit 1
fi
rm -f "$apt_log"
if [ "$choose_java" -eq 1 ]; then
    major="$(java_major)"
    if [ -z "$major" ] || [ "$major" -lt "$JAVA_MIN" ]; then
        say "installed ${missing[*]}, but \`java\` on PATH is still ${major:+Java $major}${major:-missing}:" \
            "choose Java $JAVA_MIN or later with: sudo update-alternatives --config java" >&2
        exit 1
    fi
    say "java on PATH: Java $major"
fi
