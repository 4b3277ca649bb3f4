//! sixgate-runtime: the layer between the IKE engine and the operating
//! system, which both daemons share.
//!
//! [`engine`] runs the [`sixgate_proto::endpoint::Endpoint`] on the sockets
//! and the data plane of [`sixgate_dataplane`] and turns each engine event
//! into OS actions in the right order; [`admission`] writes leases on a
//! thread of its own, in groups; [`plane`] is what the engine needs of a
//! data plane. Around it sits what a daemon needs to start: typed
//! configuration ([`config`]), credentials from PEM files ([`pki`]), the
//! control socket ([`control`]), logging ([`logging`]) and the main
//! function's runner ([`process`]). The daemons are then only their
//! configuration, this runtime, their control requests and their CLI.

pub mod admission;
pub mod ca;
pub mod check;
pub mod clock;
pub mod config;
pub mod control;
pub mod engine;
pub mod logging;
pub mod manual;
pub mod notify;
pub mod pki;
pub mod plane;
pub mod privileges;
pub mod process;
