#!/usr/bin/env bash
# Builds every example plugin from source into OUT (default ./out).
#   plugins/build.sh [OUT] [c] [go] [as]   (no language = all)
# Needs: clang + wasm-ld (Debian: clang lld) for C; Go 1.24+ for Go;
# node + npm (Debian: nodejs npm) for AssemblyScript, whose compiler is
# installed from plugins/assemblyscript/package-lock.json with npm ci.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$PWD/out}"
shift || true
langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=(c go as)
mkdir -p "$out"
out="$(cd "$out" && pwd)"

build_c() { # name src [extra clang flags]
	local name=$1 src=$2
	shift 2
	clang --target=wasm32 -O2 -nostdlib -fno-builtin -Wall -Werror -I "$root/sdk/c" "$@" \
		-Wl,--no-entry -Wl,--export=kmeter_abi_version -Wl,--export=kmeter_alloc -Wl,--export=kmeter_price \
		-Wl,-z,stack-size=8192 -Wl,--initial-memory=65536 -Wl,--max-memory=2147483648 \
		-o "$out/$name.wasm" "$src"
}

for lang in "${langs[@]}"; do
	case $lang in
	c)
		build_c c-flat "$root/plugins/c/flat/flat.c"
		build_c c-flat-v2 "$root/plugins/c/flat/flat.c" -DPRICE_MICRO=3
		build_c c-tls "$root/plugins/c/tls/tls.c"
		build_c c-split "$root/plugins/c/split/split.c"
		;;
	go)
		(cd "$root" && GOOS=wasip1 GOARCH=wasm go build -trimpath -buildmode=c-shared -o "$out/go-tiered.wasm" ./plugins/go/tiered)
		;;
	as)
		(cd "$root/plugins/assemblyscript" &&
			{ [ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund --loglevel=error; } &&
			node_modules/.bin/asc split/index.ts --config asconfig.json -o "$out/as-split.wasm")
		;;
	*)
		echo "build.sh: unknown language $lang (want c, go or as)" >&2
		exit 2
		;;
	esac
done
