#!/usr/bin/env bash
# Regenerates guest/c/bindings/ (the C bindings of the contract, committed
# so that building a C policy needs only zig and wasm-tools) from wit/ with
# `wit-bindgen c`, and records the SHA-256 of the wit/*.wit files they were
# made from in guest/c/bindings/wit.sha256. A test
# (tests/lang-policies/tests/c_bindings.rs) fails when wit/ changes and the
# bindings were not regenerated.
#
#   cargo install wit-bindgen-cli@0.63.0 --no-default-features --features c
#   guest/c/regen-bindings.sh          # or WIT_BINDGEN=/path/to/wit-bindgen
set -euo pipefail
cd "$(dirname "$0")/../.."

wit_bindgen=${WIT_BINDGEN:-wit-bindgen}
want=0.63.0
have=$("$wit_bindgen" --version | awk '{print $2}')
if [ "$have" != "$want" ]; then
  echo "regen-bindings: wit-bindgen $want expected, found ${have:-none}" >&2
  exit 1
fi

out=guest/c/bindings
rm -rf "$out"
mkdir -p "$out"
"$wit_bindgen" c wit --world policy-world --out-dir "$out" >/dev/null
# The hash of the contract: the wit/*.wit files in byte order of their
# names, concatenated.
(cd wit && LC_ALL=C ls -- *.wit | LC_ALL=C sort | xargs cat) | sha256sum | awk '{print $1}' >"$out/wit.sha256"
echo "regen-bindings: wrote $(ls "$out" | tr '\n' ' ')"
