#!/usr/bin/env bash
# Installs what tdforge needs on Debian 12 and pre-fetches the pinned Debian
# packages (kernel, OVMF) into the tdforge cache. Idempotent; prints what it does.
set -euo pipefail

PKGS=(qemu-system-x86 ovmf cpio cryptsetup-bin erofs-utils squashfs-tools faketime gdisk
      chromium chromium-driver time zstd gcc g++ libc6-dev libstdc++-12-dev make git ca-certificates
      osslsigncode python3 curl iproute2 nodejs openssl)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: Debian packages present (${#PKGS[@]} checked)"
fi

CACHE="${TDFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tdforge}"
DEBDIR="$CACHE/deb"
mkdir -p "$DEBDIR"
# name=version sha256 — the pins of manifests/dev.hcl, and Debian 12's 6.1
# kernel (tests of the refusal of kernels whose EFI stub cannot measure).
while read -r spec sha; do
  [[ -z "$spec" || "$spec" == \#* ]] && continue
  name="${spec%%=*}"; ver="${spec#*=}"
  arch=$(apt-cache show "$spec" 2>/dev/null | awk '/^Architecture:/{print $2; exit}')
  file="$DEBDIR/${name}_${ver//:/%3a}_${arch:-amd64}.deb"
  if [[ -f "$file" ]] && echo "$sha  $file" | sha256sum -c --status; then
    echo "deps: cached $spec"
    continue
  fi
  echo "deps: downloading $spec"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download -qq "$spec" 2>/dev/null); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq "$spec")
  fi
  got=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
  if [[ "$got" != "$sha" ]]; then
    echo "deps: $spec: sha256 mismatch: want $sha, got $got" >&2
    exit 1
  fi
  mv "$tmp"/*.deb "$file.tmp" && mv "$file.tmp" "$file"
  rm -rf "$tmp"; trap - EXIT
  echo "deps: cached $file"
done <<'PINS'
linux-image-6.12.117+deb12-cloud-amd64-unsigned=6.12.117-1~deb12u1 670b2688bcf94c24693f7c7e1fc9776ff2e202ff15553a2614f79415d48a6607
linux-image-6.1.0-56-cloud-amd64-unsigned=6.1.192-2 7ff7fc8da85d313242c20698c6b34542aea447673c7c1975b0d38bd6005100b5
ovmf=2022.11-6+deb12u2 e73d3d1a8799f7f6fc16b73501d913edcdd86237556fbff30693e747e6dc262e
PINS

# npm's jose: the independent JOSE implementation the e2e test checks the
# attestation service's tokens with (e2e/service_test.go joseVersion).
JOSE_VERSION=5.10.0
JOSE_DIR="$(cd "$(dirname "$0")/.." && pwd)/images/jose"
if grep -qs "\"version\": \"$JOSE_VERSION\"" "$JOSE_DIR/node_modules/jose/package.json"; then
  echo "deps: npm jose@$JOSE_VERSION present"
else
  # Debian's nodejs ships npm separately; other nodejs builds include it.
  if ! command -v npm >/dev/null; then
    echo "deps: installing Debian package npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  echo "deps: installing npm jose@$JOSE_VERSION into $JOSE_DIR"
  mkdir -p "$JOSE_DIR"
  npm install --prefix "$JOSE_DIR" --no-audit --no-fund --save-exact "jose@$JOSE_VERSION" >/dev/null
fi

echo "deps: downloading Go modules"
go mod download
echo "deps: done"
