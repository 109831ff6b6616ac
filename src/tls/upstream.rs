//! pgroute as a TLS client of PostgreSQL, with libpq's `sslmode` semantics: `prefer` and
//! `require` encrypt without checking the certificate, `verify-ca` checks its chain,
//! `verify-full` also that it names the node's host.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{provider, roots, ServerStream};
use crate::config::ServerTlsMode;
use crate::protocol::startup_code;

/// Checks the handshake's signatures, and the certificate's chain as `inner` says, minus
/// what the mode does not ask for.
#[derive(Debug)]
struct Verifier {
    /// `None`: the certificate is not checked (`prefer`, `require`).
    inner: Option<Arc<dyn ServerCertVerifier>>,
    /// `verify-ca`: a certificate for another name is accepted.
    any_name: bool,
    schemes: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(inner) = &self.inner else { return Ok(ServerCertVerified::assertion()) };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.any_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.schemes)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.schemes)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.supported_schemes()
    }
}

fn client_config(mode: ServerTlsMode, ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let inner: Option<Arc<dyn ServerCertVerifier>> = match (mode.verifies(), ca_file) {
        (true, Some(ca)) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
                .build()
                .map_err(|e| format!("tls_ca_file {ca}: {e}"))?,
        ),
        (true, None) => return Err("tls_ca_file is needed to verify the server".into()),
        (false, _) => None,
    };
    let verifier = Verifier {
        inner,
        any_name: mode == ServerTlsMode::VerifyCa,
        schemes: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Negotiates TLS on a fresh connection to a server as `mode` asks (SSLRequest, then the
/// handshake if the server agrees). Errors are in words for the connect error.
pub async fn connect(
    mut tcp: TcpStream,
    mode: ServerTlsMode,
    ca_file: Option<&str>,
    host: &str,
) -> Result<ServerStream, String> {
    if mode == ServerTlsMode::Disable {
        return Ok(ServerStream::Plain(tcp));
    }
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&startup_code::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request).await.map_err(|e| e.to_string())?;
    let answer = tcp.read_u8().await.map_err(|e| e.to_string())?;
    match (answer, mode) {
        (b'S', _) => {}
        (b'N', ServerTlsMode::Prefer) => return Ok(ServerStream::Plain(tcp)),
        (b'N', _) => return Err(format!("the server does not accept TLS (tls = {mode:?})")),
        (other, _) => return Err(format!("unexpected answer {other:#x} to SSLRequest")),
    }
    let config = client_config(mode, ca_file)?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("host {host:?}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(ServerStream::Tls(Box::new(tls)))
}
