#!/bin/sh
# Makes wasmsign2's library build offline: path dependencies instead of
# crates.io, and the three crates we cannot fetch (thiserror, getrandom,
# ssh-keys) replaced by hand. Signing, verification and parsing code is
# wasmsign2's, unchanged.
set -e
cd "$(dirname "$0")"
strip_deps() { # keep [package] and [features] sections, drop every dependency table
  awk '/^\[/{keep = ($0=="[package]" || $0=="[features]" || $0=="[lib]")} keep' "$1" > "$1.new" && mv "$1.new" "$1"
}
strip_deps rust-lang+log/Cargo.toml
sed -i '/^\[features\]/,$d' rust-lang+log/Cargo.toml
strip_deps jedisct1+rust-hmac-sha256/Cargo.toml
sed -i '/^\[features\]/,$d' jedisct1+rust-hmac-sha256/Cargo.toml
printf '[features]\ndefault = []\nopt_size = []\n' >> jedisct1+rust-hmac-sha256/Cargo.toml
E=jedisct1+rust-ed25519-compact/Cargo.toml
strip_deps $E
sed -i 's/^pem = .*/pem = ["ct-codecs"]/; s/^random = .*/random = []/; s/^traits = .*/traits = []/' $E
printf '\n[dependencies]\nct-codecs = { path = "../jedisct1+rust-ct-codecs", optional = true }\n' >> $E
L=wasm-signatures+wasmsign2/src/lib
strip_deps $L/Cargo.toml
sed -i '/^\[features\]/,$d' $L/Cargo.toml
cat >> $L/Cargo.toml <<'EOF'
[features]
default = []
openssh = []
wasm_js = []

[dependencies]
ct-codecs = { path = "../../../jedisct1+rust-ct-codecs" }
ed25519-compact = { path = "../../../jedisct1+rust-ed25519-compact", default-features = false, features = ["std", "pem"] }
hmac-sha256 = { path = "../../../jedisct1+rust-hmac-sha256" }
log = { path = "../../../rust-lang+log" }
EOF
sed -i 's/pub use {ct_codecs, getrandom, hmac_sha256, log, thiserror};/pub use {ct_codecs, hmac_sha256, log};/' $L/src/lib.rs
sed -i 's/    getrandom::fill(&mut custom_payload)/    Err::<(), ()>(())/' $L/src/signature/sig_sections.rs
sed -i 's/let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::generate());/let kp: ed25519_compact::KeyPair = unimplemented!("no RNG in the offline interop build");/' $L/src/signature/keys.rs
# thiserror replacement: same variants, Display from the #[error] strings.
python3 - $L/src/error.rs <<'EOF'
import re, sys
p = sys.argv[1]
src = open(p).read()
variants = re.findall(r'#\[error\("([^"]*)"\)\]\s*(\w+)(\(([^)]*)\))?,', src)
out = ["/// The WasmSign2 error type.", "#[derive(Debug)]", "pub enum WSError {"]
disp, froms = [], []
for msg, name, _, arg in variants:
    m = re.match(r'#\[from\]\s*(.*)', arg or "")
    ty = m.group(1) if m else arg
    out.append(f"    {name}({ty})," if ty else f"    {name},")
    if ty:
        fmt = msg.replace("{0}", "{}")
        disp.append(f'            WSError::{name}(v) => write!(f, "{fmt}"{", v" if "{0}" in msg else ""}),' if "{0}" in msg else f'            WSError::{name}(_) => write!(f, "{msg}"),')
    else:
        disp.append(f'            WSError::{name} => write!(f, "{msg}"),')
    if m:
        froms.append(f"impl From<{ty}> for WSError {{ fn from(e: {ty}) -> Self {{ WSError::{name}(e) }} }}")
out.append("}")
out.append("impl std::fmt::Display for WSError {\n    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n        match self {")
out += disp
out.append("        }\n    }\n}\nimpl std::error::Error for WSError {}")
out += froms
open(p, "w").write("\n".join(out) + "\n")
EOF
