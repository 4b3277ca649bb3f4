//! sixgate-proto: IKEv2 (RFC 7296) and ESP (RFC 4303) without I/O.
//!
//! This crate knows the protocol and nothing about sockets, clocks or the
//! kernel: [`wire`] turns datagrams into values and back, [`crypto`] holds
//! every algorithm IKEv2 and ESP negotiate and the key derivations that tie
//! them together, [`proposal`] picks algorithms by local policy, and
//! [`cert`] and [`auth`] check who the peer is. The daemons feed it bytes and
//! time and carry out what it asks for.
#![forbid(unsafe_code)]
// Untrusted input must never reach an unwrap; tests may (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod cert;
pub mod codec;
pub mod crypto;
pub mod endpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod proposal;
pub mod wire;

pub use error::Error;
