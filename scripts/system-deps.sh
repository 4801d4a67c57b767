#!/usr/bin/env bash
# What `make test` needs from the system (not from pip): checks each program, and installs the missing
# ones with apt-get when run as root on a Debian-like system; otherwise stops at once with one line that
# says what to install. Idempotent and quick when everything is there.
#
#   program                      Debian package      used by
#   sshd, ssh-keygen             openssh-server      fleet tests: real sshd processes on 127.0.0.1
#   ssh                          openssh-client
#   chromium                     chromium            report tests: the HTML report in headless Chromium
#   initdb (postgresql 15)       postgresql          history store tests: a real PostgreSQL server
#   qemu-aarch64-static          qemu-user-static    ARM tests: an emulated aarch64 board
#   update-binfmts               binfmt-support
#   debootstrap                  debootstrap         ARM tests: the board's root file system
#   ip                           iproute2            network-namespace tests
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

missing=()
have sshd || missing+=(openssh-server)
have ssh-keygen || missing+=(openssh-server)
have ssh || missing+=(openssh-client)
have chromium || missing+=(chromium)
have_initdb || missing+=(postgresql)
have qemu-aarch64-static || missing+=(qemu-user-static)
have update-binfmts || missing+=(binfmt-support)
have debootstrap || missing+=(debootstrap)
have ip || missing+=(iproute2)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
# unique, in order
pkgs=$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++' | tr '\n' ' ')
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${pkgs}(apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    exit 0
fi
echo "system-deps: the tests need these system packages: ${pkgs}- install them (e.g. sudo apt-get install ${pkgs}) and run make test again" >&2
exit 1
