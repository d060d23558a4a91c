#!/usr/bin/env bash
# Install the system packages moodstream needs (Debian/Ubuntu), and any packages named as arguments:
#   libfluidsynth3 + fluidsynth (audio), timgm6mb-soundfont (a small GM soundfont, what the tests render with),
#   jackd2 (virtual MIDI ports in tests), mma (corpus generation), tmux (terminal UI test).
#   `make run` adds fluid-soundfont-gm (FluidR3_GM, the soundfont it plays with: see soundfonts/README.md).
# Uses apt-get when it is available and we are root (or sudo works without a password); otherwise prints the
# exact command to run and exits 1. Prints nothing and exits 0 quickly when everything is already there.
set -euo pipefail

PACKAGES=(libfluidsynth3 fluidsynth timgm6mb-soundfont jackd2 mma tmux "$@")

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing system packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get not found. Install these packages with your package manager, then run make again: ${missing[*]}" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "setup: need root to install system packages. Run this, then run make again:" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# jackd2 asks whether to enable realtime scheduling; answer no without a prompt.
echo "jackd2 jackd/tweak_rt_limits boolean false" | "${sudo[@]}" debconf-set-selections 2>/dev/null || true
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/moodstream-apt.log 2>&1; then
    "${sudo[@]}" apt-get update -q >>/tmp/moodstream-apt.log 2>&1
    if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/moodstream-apt.log 2>&1; then
        tail -20 /tmp/moodstream-apt.log >&2
        echo "setup: apt-get failed (log: /tmp/moodstream-apt.log). Run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
echo "setup: system packages installed"
