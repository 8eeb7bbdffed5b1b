//! End-to-end tests: real relay, real librqbit sessions on loopback, real third-party clients.

mod browser;
mod compress;
mod failures;
mod hostile;
mod interop;
mod limits;
mod metrics;
mod proxy;
mod redis;
mod shutdown;
mod swarm;
mod tls;
mod tracker;
mod transfer;
mod transports;
mod tunnel;
