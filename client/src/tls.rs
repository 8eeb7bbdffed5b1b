//! TLS for `https://` relays (the rendezvous and the tunnel as `wss://`): the system's trusted
//! roots, plus a private CA when one is given (`--relay-ca`, for a self-hosted relay with its
//! own certificate authority).

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::Connector;

use crate::{Error, error::Result};

/// The connector for a relay: plain for `http://`, rustls for `https://`.
pub(crate) fn connector(secure: bool, extra_ca: Option<&Path>) -> Result<Connector> {
    if !secure {
        return Ok(Connector::Plain);
    }
    let tls_error = |reason: String| Error::Refused(format!("cannot set up TLS for the relay: {reason}"));
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("reading {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls_error(format!("{} holds no PEM certificate", path.display())));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
        }
    } else if added == 0 {
        return Err(tls_error(
            "this system has no trusted root certificates; give the relay's CA with --relay-ca".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}
