#!/usr/bin/env bash
# System services and packages the test suite talks to for real. Idempotent and quick when all is
# already there; installs what is missing from Debian's packages (needs root, as on CI).
set -uo pipefail

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
command -v Rscript >/dev/null 2>&1 || need_apt+=(r-base-core r-cran-surveillance)
if command -v Rscript >/dev/null 2>&1 && ! Rscript -e 'quit(status = !requireNamespace("surveillance", quietly = TRUE))' >/dev/null 2>&1; then
  need_apt+=(r-cran-surveillance)
fi
if [ ${#need_apt[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${need_apt[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >/tmp/rhip-apt.log 2>&1 \
    || echo "warning: apt-get install failed, see /tmp/rhip-apt.log (tests needing them will skip)"
fi

# Services: start the ones the suite needs if they are installed but stopped.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v mosquitto >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
fi
exit 0
