#!/usr/bin/env bash
# The crate rules that keep each side of the wire apart (ARCHITECTURE.md, "Crates"): the host
# cannot name the signer's code, and the signer library the apps load builds no host.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# refuse CRATE DEPENDENCY: CRATE must not depend on DEPENDENCY, even through another crate.
refuse() {
    local tree
    tree=$(cargo tree -p "$1" -e normal --prefix none --format '{p}')
    if grep -q "^$2 " <<<"$tree"; then
        echo "error: $1 depends on $2 (normal dependency)" >&2
        fail=1
    fi
}
refuse flotilla-host flotilla-signer
refuse flotilla-host flotilla-regtest
refuse flotilla-signer flotilla-host
refuse flotilla-signer flotilla-regtest
refuse flotilla-proto flotilla-signer
refuse flotilla-proto flotilla-host
refuse flotilla-bindings flotilla-host
refuse flotilla-bindings lightning-net-tokio
refuse flotilla-bindings lightning-background-processor
refuse flotilla-bindings lightning-block-sync
[ "$fail" = 0 ] && echo "crate dependency rules hold"
exit "$fail"
