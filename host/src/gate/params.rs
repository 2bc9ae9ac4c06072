//! SMTP parameters as the policies see them: `(NAME, value)` pairs.

use crate::smtp::command::{Body, MailParams, RcptParams, Ret};

/// MAIL FROM parameters as `(NAME, value)` pairs for the policies.
pub fn mail_params(p: &MailParams) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(size) = p.size {
        v.push(("SIZE".into(), size.to_string()));
    }
    match p.body {
        Some(Body::SevenBit) => v.push(("BODY".into(), "7BIT".into())),
        Some(Body::EightBitMime) => v.push(("BODY".into(), "8BITMIME".into())),
        None => {}
    }
    if p.smtputf8 {
        v.push(("SMTPUTF8".into(), String::new()));
    }
    match p.ret {
        Some(Ret::Full) => v.push(("RET".into(), "FULL".into())),
        Some(Ret::Hdrs) => v.push(("RET".into(), "HDRS".into())),
        None => {}
    }
    if let Some(e) = &p.envid {
        v.push(("ENVID".into(), e.clone()));
    }
    v
}

/// RCPT TO parameters as `(NAME, value)` pairs for the policies.
pub fn rcpt_params(p: &RcptParams) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(n) = p.notify {
        v.push(("NOTIFY".into(), n.to_param()));
    }
    if let Some(o) = &p.orcpt {
        v.push(("ORCPT".into(), o.clone()));
    }
    v
}
