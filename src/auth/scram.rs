//! SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL speaks it, with `tls-server-end-point`
//! channel binding over TLS; and SCRAM pass-through: the ClientKey a client's proof
//! reveals to a verifier (`ClientProof XOR HMAC(StoredKey, AuthMessage)`) logs pgroute in
//! to servers that hold the same verifier, so no password need be stored anywhere.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The same with channel binding (`tls-server-end-point`), offered over TLS.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const END_POINT: &str = "tls-server-end-point";

/// Channel binding on the server side of one connection (RFC 5802 section 6).
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// Clear text: only SCRAM-SHA-256 was offered.
    Unavailable,
    /// TLS: SCRAM-SHA-256-PLUS was offered with this `tls-server-end-point` data, and
    /// `plus` says whether the client chose it.
    Offered { data: &'a [u8], plus: bool },
}

/// Channel binding on the client side (pgroute logging in to a server).
#[derive(Debug, Clone)]
pub enum ClientBinding {
    /// No TLS: gs2 flag `n`.
    Unsupported,
    /// TLS, but the server offered no PLUS mechanism: flag `y`, so a server that does
    /// support binding sees the downgrade.
    NotOffered,
    /// SCRAM-SHA-256-PLUS with the server certificate's `tls-server-end-point` data.
    Plus(Vec<u8>),
}
const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

/// Salted passwords pgroute computed logging in to servers, by (password digest, salt,
/// iterations): a role's salt is fixed, so each pool connection after the first skips the
/// PBKDF2 (milliseconds of CPU on the thread that runs sessions). Holding one is no worse
/// than holding the password, which pgroute already does.
static SALTED: std::sync::Mutex<Option<std::collections::HashMap<SaltedKey, [u8; 32]>>> = std::sync::Mutex::new(None);
/// (SHA-256 of the password, salt, iterations).
type SaltedKey = ([u8; 32], Vec<u8>, u32);
/// Entries the cache holds before it starts over.
const SALTED_CACHE_SIZE: usize = 256;

fn cached_salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let key: SaltedKey = (Sha256::digest(password.as_bytes()).into(), salt.to_vec(), iterations);
    let lock = || SALTED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = lock().as_ref().and_then(|m| m.get(&key)) {
        return *hit;
    }
    let salted = salted_password(password, salt, iterations);
    let mut guard = lock();
    let map = guard.get_or_insert_with(Default::default);
    if map.len() >= SALTED_CACHE_SIZE {
        map.clear();
    }
    map.insert(key, salted);
    salted
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn nonce() -> String {
    let mut raw = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

/// What the proxy keeps to verify a user: never the password itself after startup.
#[derive(Clone)]
pub struct Verifier {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    pub fn new(password: &str) -> Self {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salted = salted_password(password, &salt, ITERATIONS);
        Verifier {
            stored_key: Sha256::digest(hmac(&salted, b"Client Key")).into(),
            server_key: hmac(&salted, b"Server Key"),
            salt,
            iterations: ITERATIONS,
        }
    }

    /// A verifier no proof can satisfy, used for unknown users so that the exchange looks
    /// the same as for a real user and reveals nothing: the same salt for the same name
    /// on every attempt (a keyed hash of it, the key random per process), as a known
    /// user's salt stays, and no PBKDF2 (nothing is derived: there is no password), so a
    /// flood of unknown names costs the runtime thread only a hash each.
    pub fn impossible(user: &str) -> Self {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            k
        });
        let mut stored_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut stored_key);
        Verifier {
            salt: hmac(key, user.as_bytes())[..16].to_vec(),
            iterations: ITERATIONS,
            stored_key,
            server_key: hmac(key, b"Server Key"),
        }
    }
}

impl Verifier {
    /// Parses a verifier as PostgreSQL stores it in `pg_authid.rolpassword`:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |what: &str| {
            format!("not a SCRAM-SHA-256 verifier ({what}); expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as in pg_authid.rolpassword")
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(|| bad("prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("no keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| bad("no salt"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("no ServerKey"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("iterations"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(bad("iterations out of range"));
        }
        let salt = B64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        let key = |k: &str, what: &str| -> Result<[u8; 32], String> {
            B64.decode(k).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| bad(what))
        };
        Ok(Verifier { salt, iterations, stored_key: key(stored, "StoredKey")?, server_key: key(server, "ServerKey")? })
    }

    /// The keys that log in to a server holding this verifier, given the ClientKey a
    /// client proved; `None` when it does not belong to this verifier.
    pub fn keys(&self, client_key: [u8; 32]) -> Option<Keys> {
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        constant_time_eq(&stored, &self.stored_key).then(|| Keys {
            salt: self.salt.clone(),
            iterations: self.iterations,
            client_key,
            server_key: self.server_key,
        })
    }
}

/// What logs pgroute in to a server by SCRAM without the password: the salt and
/// iterations of the server's verifier, the ClientKey recovered from a client's proof and
/// the ServerKey (to check the server's signature). Kept in memory only; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    salt: Vec<u8>,
    iterations: u32,
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Whether these keys still belong to `verifier` (a reload may have changed it).
    pub fn belong_to(&self, verifier: &Verifier) -> bool {
        verifier.keys(self.client_key).is_some_and(|k| k == *self)
    }
}

/// What pgroute answers a server's SCRAM challenge with.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    Password(&'a str),
    Keys(&'a Keys),
}

/// Iteration counts above this are refused (a hostile server or file could make each
/// login burn seconds of CPU).
const MAX_ITERATIONS: u32 = 10_000_000;

#[derive(Debug, PartialEq, Eq)]
pub struct ScramError(pub &'static str);

fn attr(part: &str, key: char) -> Result<&str, ScramError> {
    part.strip_prefix(key).and_then(|p| p.strip_prefix('=')).ok_or(ScramError("unexpected SCRAM attribute"))
}

/// Server side of one exchange.
pub struct ServerExchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    /// What the client-final `c=` attribute must decode to: the gs2 header, then the
    /// channel binding data when bound.
    cbind_input: Vec<u8>,
    nonce: String,
}

impl ServerExchange {
    /// Takes the client-first message, returns the exchange and the server-first message.
    /// A client that chose PLUS must bind to `tls-server-end-point`; one that did not may
    /// not claim (`y`) that the server offered no binding when it did (a downgrade).
    pub fn start(verifier: Verifier, client_first: &[u8], binding: Binding) -> Result<(Self, String), ScramError> {
        let msg = std::str::from_utf8(client_first).map_err(|_| ScramError("not UTF-8"))?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().ok_or(ScramError("empty message"))?;
        let bound = match (cbind, binding) {
            ("n", Binding::Unavailable | Binding::Offered { plus: false, .. }) => None,
            ("y", Binding::Unavailable) => None,
            ("y", Binding::Offered { plus: false, .. }) => {
                return Err(ScramError("channel binding was offered: the client's \"y\" flag is a downgrade"))
            }
            (flag, Binding::Offered { data, plus: true }) if flag.strip_prefix("p=") == Some(END_POINT) => Some(data),
            (_, Binding::Offered { plus: true, .. }) => {
                return Err(ScramError("SCRAM-SHA-256-PLUS needs tls-server-end-point binding"))
            }
            _ => return Err(ScramError("unexpected channel binding flag")),
        };
        let authzid = parts.next().ok_or(ScramError("missing authzid"))?;
        let bare = parts.next().ok_or(ScramError("missing client-first-bare"))?;
        let client_nonce = bare
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError("missing client nonce"))?;
        let nonce = format!("{client_nonce}{}", self::nonce());
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&verifier.salt), verifier.iterations);
        let exchange = ServerExchange {
            verifier,
            client_first_bare: bare.to_string(),
            cbind_input: [format!("{cbind},{authzid},").as_bytes(), bound.unwrap_or_default()].concat(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final message; on success returns the server-final message and
    /// the ClientKey the proof revealed (for [`Verifier::keys`]).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, [u8; 32]), ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError("missing proof"))?;
        let mut parts = without_proof.split(',');
        let cbind = attr(parts.next().unwrap_or(""), 'c')?;
        if B64.decode(cbind).ok().as_deref() != Some(self.cbind_input.as_slice()) {
            return Err(ScramError("channel binding mismatch"));
        }
        if attr(parts.next().unwrap_or(""), 'r')? != self.nonce {
            return Err(ScramError("nonce mismatch"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError("proof has the wrong length"));
        }
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&stored, &self.verifier.stored_key) {
            return Err(ScramError("wrong password"));
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_sig)), client_key))
    }
}

/// What a [`ClientExchange`] holds to answer with.
enum Secret {
    Password(String),
    Keys(Keys),
}

/// Client side of one exchange, used when pgroute logs in to a server.
pub struct ClientExchange {
    secret: Secret,
    /// The `c=` attribute of the client-final message (gs2 header and binding data).
    cbind: String,
    client_first_bare: String,
    nonce: String,
    expected_server_sig: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Returns the exchange and the client-first message.
    pub fn start(credential: Credential, binding: ClientBinding) -> (Self, String) {
        let nonce = self::nonce();
        let bare = format!("n=,r={nonce}");
        let (header, data) = match binding {
            ClientBinding::Unsupported => ("n,,".to_string(), Vec::new()),
            ClientBinding::NotOffered => ("y,,".to_string(), Vec::new()),
            ClientBinding::Plus(data) => (format!("p={END_POINT},,"), data),
        };
        let first = format!("{header}{bare}");
        let ex = ClientExchange {
            secret: match credential {
                Credential::Password(p) => Secret::Password(p.to_string()),
                Credential::Keys(k) => Secret::Keys(k.clone()),
            },
            cbind: B64.encode([header.as_bytes(), &data].concat()),
            client_first_bare: bare,
            nonce,
            expected_server_sig: None,
        };
        (ex, first)
    }

    /// Takes the server-first message and returns the client-final message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(server_first).map_err(|_| ScramError("not UTF-8"))?;
        let mut parts = msg.split(',');
        let nonce = attr(parts.next().unwrap_or(""), 'r')?;
        let salt = attr(parts.next().unwrap_or(""), 's')?;
        let iterations = attr(parts.next().unwrap_or(""), 'i')?;
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError("server nonce does not extend ours"));
        }
        let salt = B64.decode(salt).map_err(|_| ScramError("salt is not base64"))?;
        let iterations: u32 = iterations.parse().map_err(|_| ScramError("bad iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError("unreasonable iteration count"));
        }
        let (client_key, server_key) = match &self.secret {
            Secret::Password(password) => {
                let salted = cached_salted_password(password, &salt, iterations);
                (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
            }
            Secret::Keys(k) if k.salt == salt && k.iterations == iterations => (k.client_key, k.server_key),
            Secret::Keys(_) => {
                return Err(ScramError(
                    "the server's SCRAM verifier differs from the user's scram_verifier (another salt or iteration count): copy it again from pg_authid",
                ))
            }
        };
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", self.cbind);
        let auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        self.expected_server_sig = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message (the server proves it knew the password too).
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(server_final).map_err(|_| ScramError("not UTF-8"))?;
        let sig = B64.decode(attr(msg, 'v')?).map_err(|_| ScramError("server signature is not base64"))?;
        match self.expected_server_sig {
            Some(expected) if constant_time_eq(&expected, &sig) => Ok(()),
            _ => Err(ScramError("server signature mismatch")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A verifier in PostgreSQL's text form.
    pub(crate) fn text(v: &Verifier) -> String {
        let (salt, stored, server) = (B64.encode(&v.salt), B64.encode(v.stored_key), B64.encode(v.server_key));
        format!("SCRAM-SHA-256${}:{salt}${stored}:{server}", v.iterations)
    }

    /// The keys a login with `password` against `verifier` reveals.
    pub(crate) fn proven_keys(verifier: &Verifier, password: &str) -> Keys {
        let client_key = login(verifier, Credential::Password(password)).expect("the right password");
        verifier.keys(client_key).expect("keys of the verifier")
    }

    #[test]
    fn the_salted_password_cache_answers_what_pbkdf2_would() {
        for (pw, salt) in [("secret", &b"salt-one"[..]), ("secret", b"salt-two"), ("other", b"salt-one")] {
            let first = cached_salted_password(pw, salt, 64);
            assert_eq!(first, salted_password(pw, salt, 64));
            assert_eq!(cached_salted_password(pw, salt, 64), first);
        }
        assert_ne!(
            cached_salted_password("secret", b"salt-one", 64),
            cached_salted_password("secret", b"salt-one", 65)
        );
    }

    fn run(server_pw: &str, client_pw: &str) -> Result<(), ScramError> {
        bound(server_pw, client_pw, ClientBinding::Unsupported, Binding::Unavailable)
    }

    fn bound(server_pw: &str, client_pw: &str, client: ClientBinding, server: Binding) -> Result<(), ScramError> {
        let (mut client, first) = ClientExchange::start(Credential::Password(client_pw), client);
        let (server, server_first) = ServerExchange::start(Verifier::new(server_pw), first.as_bytes(), server)?;
        let client_final = client.respond(server_first.as_bytes())?;
        let (server_final, _) = server.finish(client_final.as_bytes())?;
        client.verify_server(server_final.as_bytes())
    }

    #[test]
    fn our_client_and_server_agree_on_the_right_password_only() {
        assert_eq!(run("s3cret", "s3cret"), Ok(()));
        assert_eq!(run("s3cret", "wrong"), Err(ScramError("wrong password")));
    }

    #[test]
    fn channel_binding_must_match_the_certificate_and_cannot_be_downgraded() {
        let ours = b"hash of pgroute's certificate";
        let offered = |plus| Binding::Offered { data: ours, plus };
        let plus = |d: &[u8]| ClientBinding::Plus(d.to_vec());
        assert_eq!(bound("pw", "pw", plus(ours), offered(true)), Ok(()));
        assert_eq!(
            bound("pw", "pw", plus(b"a relaying attacker's certificate"), offered(true)),
            Err(ScramError("channel binding mismatch"))
        );
        assert_eq!(bound("pw", "pw", ClientBinding::Unsupported, offered(false)), Ok(()), "binding is optional");
        assert!(bound("pw", "pw", ClientBinding::NotOffered, offered(false)).is_err(), "a downgrade");
        assert_eq!(bound("pw", "pw", ClientBinding::NotOffered, Binding::Unavailable), Ok(()));
        assert!(bound("pw", "pw", ClientBinding::Unsupported, offered(true)).is_err(), "PLUS without binding");
        assert!(bound("pw", "pw", plus(ours), Binding::Unavailable).is_err(), "binding without TLS");
        assert_eq!(bound("pw", "bad", plus(ours), offered(true)), Err(ScramError("wrong password")));
    }

    /// Issue 22, item 7: an unknown name gets the same salt on every attempt (two
    /// attempts no longer tell it from a known user), and no proof passes.
    #[test]
    fn impossible_verifier_rejects_any_proof_with_a_stable_salt() {
        let salt_of = |user: &str| {
            let (_, first) = ClientExchange::start(Credential::Password(""), ClientBinding::Unsupported);
            let (_, sf) =
                ServerExchange::start(Verifier::impossible(user), first.as_bytes(), Binding::Unavailable).unwrap();
            sf.split(',').find(|p| p.starts_with("s=")).map(str::to_string)
        };
        assert_eq!(salt_of("nobody"), salt_of("nobody"));
        assert_ne!(salt_of("nobody"), salt_of("somebody"));
        for password in ["", "x"] {
            let (mut client, first) = ClientExchange::start(Credential::Password(password), ClientBinding::Unsupported);
            let (server, sf) =
                ServerExchange::start(Verifier::impossible("nobody"), first.as_bytes(), Binding::Unavailable).unwrap();
            let cf = client.respond(sf.as_bytes()).unwrap();
            assert!(server.finish(cf.as_bytes()).is_err());
        }
    }

    /// One exchange with `verifier` as the server; returns what the client proved.
    fn login(verifier: &Verifier, credential: Credential) -> Result<[u8; 32], ScramError> {
        let (mut client, first) = ClientExchange::start(credential, ClientBinding::Unsupported);
        let (server, sf) = ServerExchange::start(verifier.clone(), first.as_bytes(), Binding::Unavailable)?;
        let cf = client.respond(sf.as_bytes())?;
        let (server_final, client_key) = server.finish(cf.as_bytes())?;
        client.verify_server(server_final.as_bytes())?;
        Ok(client_key)
    }

    /// PostgreSQL 15's verifier for the password `app` (`pg_authid.rolpassword`).
    const APP: &str = "SCRAM-SHA-256$4096:/C5VphuGa4iUgVk9I4N13w==$+qoOL082EbpUPYWWQHCk+tLm52eAkIjmyy4HMlefK7E=:5LeuQb2wCnFgLsAMd7IZjWqHYmhrKh4Z4clmKN64Oyw=";

    #[test]
    fn pass_through_logs_in_with_the_keys_a_clients_proof_reveals_and_nothing_else() {
        let verifier = Verifier::parse(APP).unwrap();
        assert!(login(&verifier, Credential::Password("wrong")).is_err());
        let client_key = login(&verifier, Credential::Password("app")).expect("PostgreSQL's verifier for \"app\"");
        let keys = verifier.keys(client_key).expect("the proven key belongs to the verifier");
        assert!(keys.belong_to(&verifier));
        // A server holding the same verifier takes the keys, and proves itself to them.
        assert_eq!(login(&verifier, Credential::Keys(&keys)), Ok(client_key));
        // Any other verifier (another salt, as after ALTER ROLE ... PASSWORD) does not.
        let other = Verifier::new("app");
        assert!(!keys.belong_to(&other));
        assert!(login(&other, Credential::Keys(&keys)).is_err());
        assert!(verifier.keys([7; 32]).is_none(), "a key that was not proven is refused");
        assert_eq!(format!("{keys:?}"), "Keys(<redacted>)");
    }

    #[test]
    fn verifiers_parse_only_in_postgresqls_form() {
        let parsed = Verifier::parse(APP).unwrap();
        assert_eq!(text(&parsed), APP, "parses back to what PostgreSQL wrote");
        for bad in [
            "",
            "md5a3556571e93b0d20722ba62be61e8c2d",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:/C5VphuGa4iUgVk9I4N13w==$+qoOL082EbpUPYWWQHCk+tLm52eAkIjmyy4HMlefK7E=:5LeuQb2wCnFgLsAMd7IZjWqHYmhrKh4Z4clmKN64Oyw=",
            "SCRAM-SHA-256$4096:/C5VphuGa4iUgVk9I4N13w==$+qoOL082EbpUPYWWQHCk+tLm52eAkIjmyy4HMlefK7E=",
            "SCRAM-SHA-256$x:!!$a:b",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [&b""[..], b"p=tls-server-end-point,,n=,r=x", b"n,,n=", b"\xff\xfe", b"n"] {
            assert!(ServerExchange::start(Verifier::new("x"), bad, Binding::Unavailable).is_err());
        }
        let (server, _) = ServerExchange::start(Verifier::new("x"), b"n,,n=,r=abc", Binding::Unavailable).unwrap();
        assert!(server.finish(b"c=biws,r=abc,p=!!!").is_err());
    }
}
