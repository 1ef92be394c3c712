// Interop driver: signs and verifies with wasmsign2's library the way the
// wasmsign2 CLI does (key id attached from the public key).
use std::env;
use std::fs::File;
use wasmsign2::*;

fn main() {
    let a: Vec<String> = env::args().collect();
    let r = match a.get(1).map(String::as_str) {
        // sign SECRET.key PUBLIC.pub IN.wasm OUT.wasm
        Some("sign") => (|| -> Result<(), WSError> {
            let sk = SecretKey::from_file(&a[2])?;
            let pk = PublicKey::from_file(&a[3])?.attach_default_key_id();
            let module = Module::deserialize_from_file(&a[4])?;
            let signed = sk.sign(module, pk.key_id())?;
            signed.serialize_to_file(&a[5])
        })(),
        // verify PUBLIC.pub SIGNED.wasm
        Some("verify") => (|| -> Result<(), WSError> {
            let pk = PublicKey::from_file(&a[2])?.attach_default_key_id();
            let mut f = std::io::BufReader::new(File::open(&a[3])?);
            pk.verify(&mut f, None)
        })(),
        _ => { eprintln!("usage: sign KEY PUB IN OUT | verify PUB SIGNED"); std::process::exit(2) }
    };
    match r {
        Ok(()) => println!("ok"),
        Err(e) => { println!("error: {}", e); std::process::exit(1) }
    }
}
