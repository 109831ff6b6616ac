//! pgroute as a TLS server for its clients.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::{certs, key, provider, roots, ClientStream};
use crate::config::{ClientCert, ClientTlsMode, Tls};

/// What a client's SSLRequest is answered with, and how the handshake is done.
pub struct Acceptor {
    pub mode: ClientTlsMode,
    acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` data of pgroute's certificate (SCRAM-SHA-256-PLUS).
    end_point: Arc<Vec<u8>>,
}

impl Acceptor {
    /// Loads the certificate, key and client CA named in `[tls]`; `None` when TLS is off.
    pub fn from_config(tls: &Tls) -> Result<Option<Arc<Acceptor>>, String> {
        if tls.mode == ClientTlsMode::Disable {
            return Ok(None);
        }
        let path = |p: &Option<toml::Spanned<String>>| p.as_ref().map(|p| p.get_ref().clone()).unwrap_or_default();
        let chain = certs(&path(&tls.cert_file))?;
        let end_point = Arc::new(super::end_point_hash(&chain[0]));
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match tls.client_cert {
            ClientCert::None => builder.with_no_client_auth(),
            ClientCert::Verify => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots(&path(&tls.ca_file))?,
                    provider(),
                )
                .build()
                .map_err(|e| format!("[tls] ca_file: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key(&path(&tls.key_file))?)
            .map_err(|e| format!("[tls] cert_file/key_file: {e}"))?;
        Ok(Some(Arc::new(Acceptor { mode: tls.mode, acceptor: Arc::new(config).into(), end_point })))
    }

    /// The TLS handshake on a client connection that asked for it; with the channel
    /// binding data of the certificate it was shown (a reload may change the next one's).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(ClientStream, Arc<Vec<u8>>)> {
        let tls = self.acceptor.accept(tcp).await?;
        Ok((ClientStream::Tls(Box::new(tls)), self.end_point.clone()))
    }
}
