#!/usr/bin/env bash
# Install mwai as a systemd service on a Debian/Ubuntu-like host. Run as root from
# a checkout:   sudo deploy/install.sh            (re-running it upgrades in place)
#
# Creates the mwai system user, /opt/mwai/venv (mwai installed from this checkout),
# /etc/mwai/mwai.env (from the example, only if absent), /var/lib/mwai (state),
# installs the units, and enables and starts mwai.service and the alert and prune
# timers only once `mwai check` passes: the example's placeholders (its public
# webhook secret above all) never go live.
set -euo pipefail

PREFIX=${PREFIX:-/opt/mwai}
CONF_DIR=${CONF_DIR:-/etc/mwai}
STATE_DIR=${STATE_DIR:-/var/lib/mwai}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 2
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: $PYTHON is older than 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 2
}

# 0. bubblewrap: the sandbox of the agent and the checks (MWAI_SANDBOX=bwrap).
if ! command -v bwrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap
fi

# 1. A system user without login; git and the agent use $HOME=/var/lib/mwai.
if ! id -u mwai >/dev/null 2>&1; then
    useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin mwai
fi

# 2. Directories: configuration readable by mwai only, state owned by mwai.
install -d -m 0750 -o root -g mwai "$CONF_DIR"
install -d -m 0750 -o mwai -g mwai "$STATE_DIR" "$STATE_DIR/work"

# 3. The virtualenv with mwai from this checkout.
"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet "$SRC"

# 4. Settings: never overwrite a filled-in file.
if [[ ! -e "$CONF_DIR/mwai.env" ]]; then
    install -m 0640 -o root -g mwai "$SRC/deploy/mwai.env.example" "$CONF_DIR/mwai.env"
    echo "install.sh: edit $CONF_DIR/mwai.env (secrets), then run install.sh again"
fi

# 5. Units (paths in them assume PREFIX=/opt/mwai).
for unit in mwai.service mwai-failure@.service mwai-alert.service mwai-alert.timer \
            mwai-prune.service mwai-prune.timer; do
    sed "s#/opt/mwai/venv#$PREFIX/venv#g" "$SRC/deploy/systemd/$unit" > "$UNIT_DIR/$unit"
    chmod 0644 "$UNIT_DIR/$unit"
done
systemctl daemon-reload

# 6. Check the configuration before enabling anything: a unit enabled with the
#    example's values would start at the next boot and accept webhooks signed
#    with the secret printed in deploy/mwai.env.example.
if sudo -u mwai "$PREFIX/venv/bin/mwai" check --env-file "$CONF_DIR/mwai.env" \
        --db "$STATE_DIR/mwai.sqlite3"; then
    systemctl enable --now mwai.service mwai-alert.timer mwai-prune.timer
    systemctl --no-pager status mwai.service || true
else
    echo "install.sh: mwai.service is NOT enabled: fix the problems above in" \
         "$CONF_DIR/mwai.env, then run install.sh again (or: mwai check --env-file" \
         "$CONF_DIR/mwai.env && systemctl enable --now mwai.service mwai-alert.timer" \
         "mwai-prune.timer)" >&2
    exit 1
fi
