#!/usr/bin/env bash
# Build the ferbatch image from deploy/Dockerfile (BuildKit), from the project root.
#
#   deploy/build-image.sh [--local-base] [--tag IMAGE] [--base IMAGE] [--network MODE] [-- DOCKER_BUILD_ARGS...]
#
#   --local-base   first make a Debian bookworm base image with debootstrap (python3, venv, pip, CA
#                  certificates; needs root and debootstrap), for machines that cannot pull python:3.11-slim.
#                  Made once, as $FERBATCH_LOCAL_BASE (default ferbatch-base:bookworm); --rebuild-base remakes it.
#   --base IMAGE   any other base image with Python 3.11 (default: the Dockerfile's python:3.11-slim).
#   --tag IMAGE    the image to build (default ferbatch:latest).
#   --network MODE network of the RUN steps (default host: pip then resolves and connects like the host).
#
# The CA bundle that pip should trust ($FERBATCH_CA_BUNDLE, else $PIP_CERT, $SSL_CERT_FILE or
# /etc/ssl/certs/ca-certificates.crt, whichever exists) goes in as a build secret: used by pip, never in a layer.
# Prints the build time and the image size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=ferbatch:latest base="" local_base=0 rebuild_base=0 network=host
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local-base) local_base=1 ;;
        --rebuild-base) local_base=1 rebuild_base=1 ;;
        --base) base=$2; shift ;;
        --tag | -t) tag=$2; shift ;;
        --network) network=$2; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# A docker client that speaks BuildKit: buildx where installed; Docker < 23 clients (Debian bookworm's
# docker.io) build with BuildKit themselves when DOCKER_BUILDKIT=1; newer clients without buildx cannot.
client_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }
docker=${DOCKER:-docker}
if "$docker" buildx version >/dev/null 2>&1; then
    build=("$docker" buildx build --load)
else
    if [[ $(client_major "$docker") -ge 23 ]]; then
        fallback=""
        for candidate in /usr/bin/docker /usr/local/bin/docker; do
            if [[ -x $candidate && $(client_major "$candidate") -lt 23 ]]; then fallback=$candidate; break; fi
        done
        if [[ -z $fallback ]]; then
            echo "build-image.sh: $docker has no buildx and is too new to use BuildKit without it;" \
                 "install docker-buildx (or Debian's docker.io client)" >&2
            exit 1
        fi
        docker=$fallback
    fi
    build=(env DOCKER_BUILDKIT=1 "$docker" build)
fi

if [[ $local_base == 1 ]]; then
    base=${FERBATCH_LOCAL_BASE:-ferbatch-base:bookworm}
    if [[ $rebuild_base == 1 ]] || ! "$docker" image inspect "$base" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || { echo "build-image.sh: --local-base needs debootstrap" >&2; exit 1; }
        rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/ferbatch-rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        start=$SECONDS
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$rootfs.log" 2>&1 \
            || { tail -20 "$rootfs.log" >&2; exit 1; }
        rm -f "$rootfs.log"
        # Nothing of this machine in the image: docker provides resolv.conf, hosts and hostname at run time.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
        : >"$rootfs/etc/resolv.conf"
        : >"$rootfs/etc/hostname"
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
        tar -C "$rootfs" -c . | "$docker" import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
            -c 'CMD ["python3"]' -m "debootstrap --variant=minbase bookworm + python3" - "$base" >/dev/null
        rm -rf "$rootfs"
        trap - EXIT
        echo "build-image.sh: made base image $base in $((SECONDS - start)) s"
    fi
fi

args=(-f deploy/Dockerfile -t "$tag" --network "$network")
# buildx asks for the host-network entitlement explicitly (its docker driver grants it by default).
[[ ${build[1]} == buildx && $network == host ]] && args+=(--allow network.host)
[[ -n $base ]] && args+=(--build-arg "BASE_IMAGE=$base")
ca=${FERBATCH_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
[[ -f $ca ]] && args+=(--secret "id=ca,src=$ca")

start=$SECONDS
"${build[@]}" "${args[@]}" "$@" .
size=$("$docker" image inspect --format '{{.Size}}' "$tag")
echo "build-image.sh: built $tag in $((SECONDS - start)) s; image size $((size / 1000000)) MB"
