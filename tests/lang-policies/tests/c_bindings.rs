//! The committed C bindings (`guest/c/bindings/`, made by `wit-bindgen c`)
//! were generated from the contract as it is: `guest/c/regen-bindings.sh`
//! records the SHA-256 of the `wit/*.wit` files in
//! `guest/c/bindings/wit.sha256`, and this test recomputes it.

use sha2::{Digest, Sha256};
use sluice_lang_policies::workspace;

#[test]
fn c_bindings_match_the_contract() {
    let wit = workspace().join("wit");
    let mut files: Vec<_> = std::fs::read_dir(&wit)
        .unwrap_or_else(|e| panic!("list {}: {e}", wit.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut hash = Sha256::new();
    for f in &files {
        hash.update(std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())));
    }
    let now: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let recorded_at = workspace().join("guest/c/bindings/wit.sha256");
    let recorded = std::fs::read_to_string(&recorded_at)
        .unwrap_or_else(|e| panic!("read {}: {e}", recorded_at.display()));
    assert_eq!(
        recorded.trim(),
        now,
        "wit/ changed since guest/c/bindings/ was generated: run guest/c/regen-bindings.sh \
         (with wit-bindgen-cli 0.63.0) and commit the result"
    );
}
