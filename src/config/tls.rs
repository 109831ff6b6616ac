//! `[tls]` (clients to pgroute) and the per-node `tls` settings (pgroute to servers).

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Whether clients may, or must, use TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`.
    #[default]
    Disable,
    /// TLS offered; clear text accepted too.
    Allow,
    /// TLS offered; a clear-text login is refused (28000).
    Require,
}

/// Client certificates (mutual TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCert {
    /// Not asked for.
    #[default]
    None,
    /// Required, and must chain to `ca_file`.
    Verify,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// pgroute's certificate chain (PEM), leaf first.
    pub cert_file: Option<Spanned<String>>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<Spanned<String>>,
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pub client_cert: ClientCert,
}

/// How pgroute connects to one server (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ServerTlsMode {
    #[serde(rename = "disable")]
    Disable,
    /// TLS if the server offers it, no certificate check.
    #[serde(rename = "prefer")]
    #[default]
    Prefer,
    /// TLS or no connection; no certificate check.
    #[serde(rename = "require")]
    Require,
    /// TLS with a certificate that chains to `tls_ca_file`.
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// As `verify-ca`, and the certificate names the node's `host`.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl ServerTlsMode {
    pub fn verifies(self) -> bool {
        matches!(self, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull)
    }
}

impl Tls {
    /// What is missing for the mode chosen, with the offset of the setting to blame.
    pub fn check(&self) -> Result<(), (Option<usize>, String)> {
        if self.mode != ClientTlsMode::Disable && (self.cert_file.is_none() || self.key_file.is_none()) {
            return Err((None, "[tls] mode needs cert_file and key_file".into()));
        }
        if self.client_cert == ClientCert::Verify && self.ca_file.is_none() {
            return Err((None, "[tls] client_cert = \"verify\" needs ca_file".into()));
        }
        Ok(())
    }
}
