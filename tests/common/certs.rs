//! A throwaway PKI for TLS tests: a CA, a certificate for `localhost` and 127.0.0.1 (used
//! by pgroute and by PostgreSQL), and a client certificate for mutual TLS.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(path: &Path, text: &str, private: bool) {
    std::fs::write(path, text).expect("write PEM");
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// Generates a fresh PKI under a new temporary directory named after `name`.
pub fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("pgroute-pki-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("pki dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(DnType::CommonName, format!("pgroute test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let leaf = |sans: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
    let (client_cert, client_key) = leaf(vec![], "app");
    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        dir,
    };
    write(&p.ca, &ca.pem(), false);
    write(&p.server_cert, &server_cert, false);
    write(&p.server_key, &server_key, true);
    write(&p.client_cert, &client_cert, false);
    write(&p.client_key, &client_key, true);
    p
}
