//! `replay-v2`: version 2 of the record-and-replay test policy. See
//! `../replay-body.rs`.

wit_bindgen::generate!({ path: "../../../wit", world: "policy-world" });

const VERSION: u32 = 2;

include!("../../replay-body.rs");
