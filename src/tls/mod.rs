//! TLS on both sides, with rustls (ring provider).
//!
//! - `accept`: pgroute as a TLS server for clients (`[tls]`): the SSLRequest answer, the
//!   handshake, optional client certificates, and the `tls-server-end-point` channel
//!   binding data for SCRAM-SHA-256-PLUS. Rebuilt from the files at each reload, so
//!   renewed certificates apply to new connections without dropping sessions.
//! - `upstream`: pgroute as a TLS client of PostgreSQL (`[[nodes]] tls`), with libpq's
//!   `sslmode` semantics.
//! - `stream`: the byte streams that are TCP or TLS.

mod accept;
mod stream;
mod upstream;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

pub use accept::Acceptor;
pub use stream::{ClientRead, ClientStream, ClientWrite, ServerStream};
pub use upstream::connect;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{path}: {e}"))
}

fn roots(path: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(Arc::new(store))
}

/// The `tls-server-end-point` channel binding data (RFC 5929): the hash of the server's
/// certificate with its signature's hash function, SHA-256 for MD5, SHA-1 and SHA-256.
pub fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    match signature_algorithm(cert) {
        Some(oid) if SHA384.contains(&oid) => sha2::Sha384::digest(cert).to_vec(),
        Some(oid) if SHA512.contains(&oid) => sha2::Sha512::digest(cert).to_vec(),
        _ => sha2::Sha256::digest(cert).to_vec(),
    }
}

/// One DER element at the start of `der`: (tag, contents, the rest after it).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The OID of a certificate's `signatureAlgorithm` (Certificate ::= SEQUENCE {
/// tbsCertificate, signatureAlgorithm, signatureValue }).
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, body, _) = der_element(cert)? else { return None };
    let (_, _, after_tbs) = der_element(body)?;
    let (0x30, alg, _) = der_element(after_tbs)? else { return None };
    let (0x06, oid, _) = der_element(alg)? else { return None };
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_hash_chooses_the_end_point_hash() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID ecdsa-with-SHA384 }, BIT STRING }
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend_from_slice(&alg);
            body.extend_from_slice(&[0x03, 0x01, 0x00]);
            let mut c = vec![0x30, body.len() as u8];
            c.extend_from_slice(&body);
            c
        };
        let p384 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(end_point_hash(&p384).len(), 48);
        let p512 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(end_point_hash(&p512).len(), 64);
        let p256 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
        assert_eq!(end_point_hash(&p256), sha2::Sha256::digest(&p256).to_vec());
        assert_eq!(end_point_hash(b"\x30\x85garbage").len(), 32, "unparseable: SHA-256");
        assert_eq!(signature_algorithm(&[]), None);
    }
}
