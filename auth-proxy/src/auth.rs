//! HTTP Basic credentials checked against the users' password files, read
//! once at start. Passwords are kept as SHA-256 digests and compared in
//! constant time, so neither the length nor the content of a password can
//! be learnt from how long a refusal takes.

use std::{collections::BTreeMap, path::Path};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// A password file that cannot be used; names the file and the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("users.{user}: cannot read the password file {path}: {message}")]
    Read { user: String, path: String, message: String },
    #[error("users.{user}: the password file {path} is empty")]
    Empty { user: String, path: String },
}

type Digest32 = [u8; 32];

fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// The users and their passwords' digests.
#[derive(Clone)]
pub struct Users {
    digests: BTreeMap<String, Digest32>,
    /// Compared against when the user is unknown, so that an unknown user
    /// costs as long as a wrong password.
    decoy: Digest32,
}

/// Who a request's credentials say it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// No `Authorization: Basic` header, or one that does not decode.
    Anonymous,
    /// A user of the configuration with a wrong password, or an unknown user.
    Refused,
    /// A user of the configuration, its password right.
    User(String),
}

impl Users {
    /// Reads each user's password file (a trailing newline is not part of
    /// the password: `echo` and `kubectl create secret --from-file` add one).
    pub fn load(files: &BTreeMap<String, std::path::PathBuf>) -> Result<Self, PasswordError> {
        let mut digests = BTreeMap::new();
        for (user, path) in files {
            let password = read_password(user, path)?;
            digests.insert(user.clone(), digest(password.as_bytes()));
        }
        Ok(Users { digests, decoy: digest(b"\0not a password") })
    }

    /// For tests and callers that hold the passwords themselves.
    pub fn from_passwords<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Users {
            digests: pairs.into_iter().map(|(u, p)| (u.to_owned(), digest(p.as_bytes()))).collect(),
            decoy: digest(b"\0not a password"),
        }
    }

    /// Who the `Authorization` header's value says the caller is.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Identity {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Identity::Anonymous;
        };
        let candidate = digest(password.as_bytes());
        let (known, expected) = match self.digests.get(&user) {
            Some(d) => (true, d),
            None => (false, &self.decoy),
        };
        let matches: bool = candidate.ct_eq(expected).into();
        if known && matches { Identity::User(user) } else { Identity::Refused }
    }

    pub fn knows(&self, user: &str) -> bool {
        self.digests.contains_key(user)
    }
}

fn read_password(user: &str, path: &Path) -> Result<String, PasswordError> {
    let text = std::fs::read_to_string(path).map_err(|e| PasswordError::Read {
        user: user.into(),
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        return Err(PasswordError::Empty { user: user.into(), path: path.display().to_string() });
    }
    Ok(password.to_owned())
}

/// `Basic <base64(user:password)>` as (user, password); None when it is
/// another scheme or does not decode.
pub fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The `Authorization` header value for `user` and `password`.
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_password_of_a_known_user_identifies() {
        let users = Users::from_passwords([("vigil", "s3cret"), ("otlp", "other")]);
        let header = |u: &str, p: &str| basic_header(u, p).into_bytes();
        assert_eq!(users.identify(Some(&header("vigil", "s3cret"))), Identity::User("vigil".into()));
        assert_eq!(users.identify(Some(&header("vigil", "other"))), Identity::Refused);
        assert_eq!(users.identify(Some(&header("nobody", "s3cret"))), Identity::Refused);
        assert_eq!(users.identify(Some(&header("vigil", "s3cret\n"))), Identity::Refused);
        assert_eq!(users.identify(None), Identity::Anonymous);
        assert_eq!(users.identify(Some(b"Bearer abc")), Identity::Anonymous);
        assert_eq!(users.identify(Some(b"Basic !!!")), Identity::Anonymous);
        // The scheme is case-insensitive; a password may hold colons.
        let lower = basic_header("vigil", "a:b").replacen("Basic", "basic", 1);
        assert_eq!(basic_credentials(lower.as_bytes()), Some(("vigil".into(), "a:b".into())));
    }

    #[test]
    fn password_files_lose_one_trailing_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil");
        std::fs::write(&file, "s3cret\n").unwrap();
        let users = Users::load(&BTreeMap::from([("vigil".to_owned(), file.clone())])).unwrap();
        assert_eq!(
            users.identify(Some(basic_header("vigil", "s3cret").as_bytes())),
            Identity::User("vigil".into())
        );
        std::fs::write(&file, "\n").unwrap();
        let err = Users::load(&BTreeMap::from([("vigil".to_owned(), file.clone())])).err().unwrap();
        assert!(matches!(err, PasswordError::Empty { .. }), "{err}");
        let missing = dir.path().join("missing");
        let err = Users::load(&BTreeMap::from([("otlp".to_owned(), missing.clone())])).err().unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with("users.otlp: cannot read the password file")
                && text.contains(&*missing.to_string_lossy())
        );
    }
}
