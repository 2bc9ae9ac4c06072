//! `basic`: a test policy with a verdict for every stage, driven by its
//! config and by the addresses it sees. See `body.rs`.

wit_bindgen::generate!({ path: "../../../wit", world: "policy-world" });

include!("body.rs");
