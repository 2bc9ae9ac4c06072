//! The SMTP protocol core: parser, typed replies, DATA/BDAT readers and
//! the server state machine. No I/O, no tokio, no clocks: bytes in,
//! [`Action`]s out (the rustls split applied to SMTP).

pub mod address;
pub mod base64;
pub mod command;
pub mod data;
pub mod header;
pub mod reply;
pub mod session;

pub use address::{Domain, Mailbox, ReversePath};
pub use reply::{Enhanced, Reply};
pub use session::{
    Action, Check, Outcome, Recipient, Session, SessionConfig, Transaction, Verdict, Waiting,
};

#[cfg(test)]
mod tests;
