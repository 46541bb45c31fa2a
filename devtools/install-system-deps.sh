#!/usr/bin/env bash
# Installs the system packages of one set, only where they are missing. Needs root (or sudo) on a
# Debian/Ubuntu host.
#
#   scripts/install-system-deps.sh service   what the native stack needs: Java 17 for TorchServe,
#                                            nginx, Python 3.11's venv (`make install`)
#   scripts/install-system-deps.sh test      what the tests and load tools add: wrk, and headless
#                                            Chromium with its WebDriver (`make install-dev`)
set -euo pipefail

missing=()
case "${1:-}" in
    service)
        command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
        command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
        [ -e /usr/include/python3.11/Python.h ] || python3.11 -c 'import venv' 2>/dev/null || missing+=(python3.11-venv)
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
                echo "install-system-deps: no /usr/bin/chromium + /usr/bin/chromedriver; the browser test will be skipped" >&2
            fi
        fi
        ;;
    *)
        echo "install-system-deps: say which set to install: service (make install) or test (make install-dev)" >&2
        exit 2
        ;;
esac

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
