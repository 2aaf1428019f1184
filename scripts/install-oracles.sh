#!/usr/bin/env bash
# Installs the qemu-img oracles the differential tests compare against:
#   - qemu-img 7.2 from Debian 12's qemu-utils (system-wide, with apt)
#   - qemu-img 10.0 from bookworm-backports, unpacked with dpkg -x into .oracles/qemu-10.0
# plus bubblewrap (sandbox layer), strace (used by the path-policy tests) and cryptsetup-bin
# (LUKS2 images for the encryption tests).
# The backports suite is added only to a private apt configuration derived from the
# machine's own apt sources, so the machine's apt setup is left untouched.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
oracles="$root/.oracles"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

have_system() { command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v bwrap >/dev/null && command -v strace >/dev/null && command -v cryptsetup >/dev/null; }
have_backport() { [ -x "$oracles/qemu-10.0/usr/bin/qemu-img" ]; }

if have_system && have_backport && [ "${1:-}" != "--force" ]; then
  exit 0
fi

if ! have_system; then
  echo "install-oracles: installing qemu-utils, bubblewrap, strace and cryptsetup-bin with apt" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq qemu-utils bubblewrap strace cryptsetup-bin >/dev/null
fi

if ! have_backport; then
  echo "install-oracles: fetching qemu-utils from bookworm-backports" >&2
  apt_dir="$oracles/apt"
  rm -rf "$apt_dir"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/sources.list.d"
  # Derive the backports source from the machine's own Debian mirror (deb822 or one-line form).
  mirror=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    mirror=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources || true)
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1=="deb" && / bookworm / {for (i=2;i<=NF;i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list || true)
  fi
  if [ -z "$mirror" ]; then
    echo "install-oracles: no Debian bookworm source found in /etc/apt" >&2
    exit 1
  fi
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
    "$mirror" "$keyring" > "$apt_dir/sources.list.d/backports.sources"
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
            -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" download qemu-utils/bookworm-backports >/dev/null)
  deb=$(ls "$apt_dir"/archives/qemu-utils_*.deb | head -n 1)
  rm -rf "$oracles/qemu-10.0"
  dpkg -x "$deb" "$oracles/qemu-10.0"
  rm -rf "$apt_dir"
fi

"$oracles/qemu-10.0/usr/bin/qemu-img" --version | head -n 1 >&2
qemu-img --version | head -n 1 >&2
