//! The SMTP protocol core, both directions: the server's parser, typed
//! replies, DATA/BDAT readers and state machine, and the client's reply
//! parser, EHLO reading and DATA encoder ([`client`]). No I/O, no tokio, no clocks: bytes in,
//! [`Action`]s out (the rustls split applied to SMTP).

pub mod address;
pub mod base64;
pub mod client;
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
