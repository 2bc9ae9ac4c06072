//! `other-major`: the `basic` policy built against a copy of the contract
//! whose package version is 1.0.0, so a 0.1 host must refuse it.

wit_bindgen::generate!({ path: "wit", world: "policy-world" });

include!("../../basic/src/body.rs");
