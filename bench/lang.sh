#!/usr/bin/env bash
# The same policy (access) in Rust, Python and JavaScript: component size,
# build time, compile time in the gateway, cached load, session start,
# per-hook call and per-session cost.
#
#   bash bench/lang.sh            # needs what scripts/test installs (.tools/)
#
# Prints a Markdown table's raw figures; criterion's own report follows.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-lang
mkdir -p "$out"
rm -rf "$out/cache" "$out/compile-cache"

cargo build --release --locked -p sluice -p sluice-policy-build >/dev/null
sluice=target/release/sluice
rust=target/policies/wasm32-wasip2/release/access.wasm

echo "## build (sluice policy build; Rust: cargo, release, as tests/policy-build)"
for lang in python js; do
  start=$(date +%s.%N)
  "$sluice" policy build "policies/$lang/access" --out "$out/$lang-access.wasm" >/dev/null
  end=$(date +%s.%N)
  printf '%-7s build %6.1f s\n' "$lang" "$(echo "$end - $start" | bc)"
done

echo "## size"
for f in "$rust" "$out/python-access.wasm" "$out/js-access.wasm"; do
  printf '%-45s %10d bytes\n' "$f" "$(stat -c %s "$f")"
done

echo "## compile in the gateway (sluice policy compile: both cores, empty cache)"
printf 'data_dir = "%s"\n[policy_engine]\ncache_dir = "%s"\nmax_memory = "128MiB"\n' \
  "$out/data" "$out/compile-cache" > "$out/compile.toml"
for f in "$rust" "$out/python-access.wasm" "$out/js-access.wasm"; do
  "$sluice" policy compile --config "$out/compile.toml" "$f" | sed 's/(sha256 [0-9a-f]*) in [^,]*, //'
done

export SLUICE_BENCH_COMPONENTS="rust=$PWD/$rust,python=$PWD/$out/python-access.wasm,js=$PWD/$out/js-access.wasm"
export SLUICE_BENCH_CACHE="$PWD/$out/cache"
cargo bench --locked -p sluice --bench lang
