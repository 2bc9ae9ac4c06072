//! `replay-v1`: version 1 of the record-and-replay test policy. See
//! `../replay-body.rs`.

wit_bindgen::generate!({ path: "../../../wit", world: "policy-world" });

const VERSION: u32 = 1;

include!("../../replay-body.rs");
