//! PostgreSQL's md5 password scheme: "md5" + hex(md5(hex(md5(password || user)) || salt)).

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The response a client sends to an AuthenticationMD5Password challenge.
pub fn response(user: &str, password: &str, salt: &[u8; 4]) -> String {
    let inner = hex(&Md5::digest([password.as_bytes(), user.as_bytes()].concat()));
    let outer = Md5::digest([inner.as_bytes(), salt.as_slice()].concat());
    format!("md5{}", hex(&outer))
}

/// Constant-time comparison of a client's response with the expected one.
pub fn verify(user: &str, password: &str, salt: &[u8; 4], got: &[u8]) -> bool {
    super::scram::constant_time_eq(response(user, password, salt).as_bytes(), got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independently_computed_vector() {
        // python3: "md5" + md5(md5(b"secretapp").hexdigest() + b"\x01\x02\x03\x04").hexdigest()
        let r = response("app", "secret", &[1, 2, 3, 4]);
        assert_eq!(r, "md5911f527656472583a006e7727877b33e");
        assert!(verify("app", "secret", &[1, 2, 3, 4], r.as_bytes()));
        assert!(!verify("app", "wrong", &[1, 2, 3, 4], r.as_bytes()));
    }
}
