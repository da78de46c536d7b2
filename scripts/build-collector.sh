#!/usr/bin/env bash
# Build the otel-llm-quota OpenTelemetry Collector from collector-config/builder-config.yaml.
#
#   bash scripts/build-collector.sh        # or: make collector
#
# Installs the pinned OpenTelemetry Collector Builder (ocb) with `go install` into .tools/bin and
# builds .tools/otelcol-llm-quota/otelcol-llm-quota. Idempotent: when the binary was built from
# the same manifest and builder version (a SHA-256 stamp next to it), it does nothing.
# Needs Go (on PATH or /usr/local/go/bin) and access to the Go module proxy. Go's module and
# build caches (GOMODCACHE, GOCACHE) are Go's defaults unless set, so they survive `git clean`.
# Quiet on success; on failure it prints the builder's log and exits non-zero.
set -euo pipefail

BUILDER_VERSION=v0.165.0
cd "$(dirname "$0")/.."
root=$PWD
manifest=collector-config/builder-config.yaml
tools=$root/.tools
out=$tools/otelcol-llm-quota
binary=$out/otelcol-llm-quota
stamp=$out/.build-stamp

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
  else
    echo "build-collector: Go is not installed (need go >= 1.24 on PATH or in /usr/local/go)" >&2
    exit 1
  fi
fi

want=$( { echo "builder $BUILDER_VERSION"; go env GOOS GOARCH; cat "$manifest"; } | sha256sum | cut -d' ' -f1)
if [ -x "$binary" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

mkdir -p "$tools/bin" "$out"
log=$tools/build-collector.log
: >"$log"
fail() {
  echo "build-collector: $1 failed; log ($log):" >&2
  tail -n 80 "$log" >&2
  exit 1
}

builder=$tools/bin/builder
if ! { [ -x "$builder" ] && "$builder" version 2>/dev/null | grep -q "$BUILDER_VERSION"; }; then
  echo "build-collector: installing ocb $BUILDER_VERSION into $tools/bin" >&2
  GOBIN="$tools/bin" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" \
    >>"$log" 2>&1 || fail "go install builder@$BUILDER_VERSION"
fi

echo "build-collector: building $binary (takes a few minutes the first time)" >&2
start=$SECONDS
rm -f "$stamp"
# GOFLAGS -e reaches the builder's `go mod tidy` (go build has no -e and ignores it): tidy then
# tolerates a module that only a component's own tests import and that the module proxy does not
# serve (fileexporter's tests import otlpencodingextension, refused by the proxy this project is
# built behind). Those tests are never built; a missing module that the collector does import
# still fails the build, in go build.
GOFLAGS="${GOFLAGS:+$GOFLAGS }-e" "$builder" --config "$manifest" >>"$log" 2>&1 \
  || fail "ocb --config $manifest"
[ -x "$binary" ] || fail "ocb (no binary at $binary)"
"$binary" components >>"$log" 2>&1 || fail "$binary components"
echo "$want" >"$stamp"
echo "build-collector: built in $((SECONDS - start)) s" >&2
