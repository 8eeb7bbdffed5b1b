//! End-to-end tests: real relay, real librqbit sessions on loopback, real third-party clients.

mod failures;
mod interop;
mod metrics;
mod transfer;
mod transports;
