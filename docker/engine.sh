#!/usr/bin/env bash
# The container engine of the docker-compose demo (used by `python -m experiments.compose`).
#
#   docker/engine.sh setup              prints the engine to use (docker or podman) on its last
#                                       line; with no engine, installs rootful Podman from Debian
#                                       (needs root) and configures it for this kind of machine
#   docker/engine.sh debian-base TAG    a Debian bookworm image with python3, venv and the host's
#                                       CA certificates, made without any registry (mmdebstrap)
#
# Podman's configuration (/etc/containers/containers.conf, written only if absent or ours):
# - default ulimits within this machine's hard limits: without CAP_SYS_RESOURCE a container
#   cannot be given more than the host's hard limit, and Podman caps NPROC at kernel.pid_max;
# - runc, cgroupfs and a file events logger: crun and systemd cgroups fail on hybrid cgroups;
# - netavark: the Debian package also ships a CNI file that would otherwise be picked.
set -euo pipefail

CONF=/etc/containers/containers.conf
MARK="# written by keco-flower docker/engine.sh"
PACKAGES=(podman runc netavark aardvark-dns iptables catatonit mmdebstrap)

die() { echo "engine.sh: $*" >&2; exit 1; }

docker_works() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

install_podman() {
    [ "$(id -u)" = 0 ] || die "no container engine; as root run: apt-get install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "no container engine and no apt-get: install Podman or Docker"
    echo "engine.sh: installing ${PACKAGES[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
}

configure_podman() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        echo "engine.sh: keeping your $CONF (needs runtime=runc, cgroup_manager=cgroupfs," \
             "events_logger=file, network_backend=netavark on hybrid cgroups)" >&2
        return
    fi
    [ -w "$(dirname "$CONF")" ] || die "cannot write $CONF: run as root once"
    local nofile nproc pidmax
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu); pidmax=$(cat /proc/sys/kernel/pid_max)
    [ "$nofile" = unlimited ] && nofile=1048576
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pidmax" ]; then nproc=$pidmax; fi
    local want
    want=$(cat <<CONF
$MARK
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
init_path = "/usr/bin/catatonit"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
CONF
)
    if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" > "$CONF"
        echo "engine.sh: wrote $CONF" >&2
    fi
}

setup() {
    if docker_works; then
        docker compose version >/dev/null 2>&1 || die "Docker has no compose plugin: install docker-compose-plugin"
        echo docker
        return
    fi
    command -v podman >/dev/null && command -v runc >/dev/null || install_podman
    configure_podman
    podman info >/dev/null 2>&1 || die "podman does not work here: $(podman info 2>&1 | tail -3)"
    echo podman
}

debian_base() {
    local tag=$1 engine=${ENGINE:-podman}
    command -v mmdebstrap >/dev/null || {
        [ "$(id -u)" = 0 ] || die "mmdebstrap is missing: apt-get install mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2
    }
    local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    # the host's extra CA certificates (e.g. a TLS-intercepting egress) go into the image, or pip
    # inside a build fails its certificate checks
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libsqlite3-0 \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"; fi' \
        --customize-hook='chroot "$1" update-ca-certificates' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$work/rootfs.tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" >&2
    local ca=/etc/ssl/certs/ca-certificates.crt
    "$engine" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        --change "ENV PIP_CERT=$ca" --change "ENV SSL_CERT_FILE=$ca" \
        --change "ENV REQUESTS_CA_BUNDLE=$ca" "$work/rootfs.tar" "$tag" >&2
    echo "$tag"
}

case "${1:-}" in
    setup) setup ;;
    debian-base) [ $# -eq 2 ] || die "usage: $0 debian-base TAG"; debian_base "$2" ;;
    *) die "usage: $0 setup | debian-base TAG" ;;
esac
