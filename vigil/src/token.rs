//! Bootstrap tokens and CA pinning for `kubeadm join`: the seed's optional
//! "token automation", done the way kubeadm's discovery expects.

use std::{fmt, str::FromStr, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::{SignedDuration, Timestamp},
};
use rand::Rng;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// kubeadm accepts only `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("bootstrap token {0:?} is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    BadToken(String),
    /// The CA certificate read from the control plane did not parse.
    #[error("the cluster CA certificate is not valid PEM/X.509: {0}")]
    BadCaCertificate(String),
}

/// A kubeadm bootstrap token: a public id and a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut part =
            |len| (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        BootstrapToken { id: part(6), secret: part(16) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of the Secret in kube-system that holds this token.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The token as the Secret `kubeadm token create` makes: usable to
    /// authenticate a joining kubelet and to sign cluster-info, in kubeadm's
    /// group for joining nodes, expiring `ttl` after `now`. Created through
    /// the API, the secret never appears on a command line (where any user
    /// on the host can read it in the process list) nor in kubeadm's output.
    pub fn secret(&self, ttl: Duration, now: Timestamp, description: &str) -> Secret {
        let expiration = now + SignedDuration::from_secs(ttl.as_secs() as i64);
        let data = [
            ("token-id", self.id.as_str()),
            ("token-secret", self.secret.as_str()),
            ("expiration", &expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
            ("auth-extra-groups", JOINING_NODES_GROUP),
            ("description", description),
        ];
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            string_data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()),
            ..Default::default()
        }
    }
}

/// The group kubeadm's RBAC lets join (read the kubeadm and kubelet
/// configs, post a node's CSR): what `kubeadm token create` gives a token.
pub const JOINING_NODES_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

impl FromStr for BootstrapToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('.') {
            Some((id, secret)) if is_token_part(id, 6) && is_token_part(secret, 16) => {
                Ok(BootstrapToken { id: id.into(), secret: secret.into() })
            }
            _ => Err(Error::BadToken(s.into())),
        }
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// Never print the secret by accident.
impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

/// kubeadm's `--discovery-token-ca-cert-hash`: SHA-256 of the CA
/// certificate's DER-encoded SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &[u8]) -> Result<String, Error> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(ca_pem).map_err(|e| Error::BadCaCertificate(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| Error::BadCaCertificate(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = BootstrapToken::generate();
        let b = BootstrapToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<BootstrapToken>().unwrap(), a);
        assert_eq!(a.secret_name(), format!("bootstrap-token-{}", a.id()));
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn the_secret_is_the_one_kubeadm_makes() {
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let now: Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        let secret = token.secret(Duration::from_secs(600), now, "joins workers");
        assert_eq!(secret.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(secret.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = secret.string_data.unwrap();
        let get = |k: &str| data.get(k).map(String::as_str);
        assert_eq!(get("token-id"), Some("abcdef"));
        assert_eq!(get("token-secret"), Some("0123456789abcdef"));
        // RFC 3339 in whole seconds, as the bootstrap authenticator parses it.
        assert_eq!(get("expiration"), Some("2026-01-02T03:14:05Z"));
        assert_eq!(get("usage-bootstrap-authentication"), Some("true"));
        assert_eq!(get("usage-bootstrap-signing"), Some("true"));
        assert_eq!(get("auth-extra-groups"), Some(JOINING_NODES_GROUP));
        assert_eq!(get("description"), Some("joins workers"));
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in
            ["abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123"]
        {
            assert_eq!(bad.parse::<BootstrapToken>(), Err(Error::BadToken(bad.into())));
        }
    }

    /// The fixture is a self-signed RSA-2048 CA with CN=kubernetes, the shape
    /// kubeadm generates (`openssl req -x509 -newkey rsa:2048 -subj /CN=kubernetes`);
    /// its hash was computed the way kubeadm's documentation does:
    /// `openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | sha256sum`.
    #[test]
    fn ca_hash_matches_openssl() {
        let pem = include_bytes!("../tests/fixtures/ca.crt");
        let expected = include_str!("../tests/fixtures/ca.crt.sha256").trim();
        assert_eq!(ca_cert_hash(pem).unwrap(), format!("sha256:{expected}"));
        assert!(matches!(ca_cert_hash(b"not a cert"), Err(Error::BadCaCertificate(_))));
    }
}
