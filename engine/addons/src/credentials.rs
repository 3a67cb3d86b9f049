//! The credentials of the addresses behind the authenticating proxy
//! (Prometheus, Alertmanager, Jaeger), generated once per cluster by
//! `vigil up`: created when missing, never replaced, never written under
//! `manifests/`.
//!
//! - `monitoring/vigil-api-credentials` (`username`: `vigil`, `password`):
//!   everything on every address. The host's copy of the password is the
//!   file `vigil up` and `vigil status` name.
//! - `monitoring/vigil-otlp-credentials` (`username`: `otlp`, `password`,
//!   `headers`): only `POST /v1/traces` on Jaeger's OTLP port, for the pods
//!   that export spans. `headers` is `OTEL_EXPORTER_OTLP_HEADERS`'s value
//!   (`Authorization=Basic%20...`, percent-encoded as the specification
//!   says), which those pods read through `secretKeyRef`.
//! - `monitoring/vigil-logs-credentials` (`username`: `logs`, `password`):
//!   only `POST /insert/native` on VictoriaLogs, for vlagent, which runs in
//!   `logging` and reads the copy there as a password file.
//!
//! All are generated; the copy of `headers` in every other namespace whose
//! pods export spans (`default`) is derived from the one read back from the
//! API, so a copy always matches the password Jaeger's proxy checks even
//! when the source was made by an earlier `up`; so is the log shippers'
//! copy in `logging`.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::{
    ByteString,
    api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector},
};
use kube::{Api, Client, api::ObjectMeta};

use super::{node_exporter, web};

pub const NAMESPACE: &str = node_exporter::NAMESPACE;
/// The user with every right, and its Secret.
pub const API_SECRET: &str = "vigil-api-credentials";
pub const API_USER: &str = "vigil";
/// The user of the span senders, and its Secret (one in each of [`OTLP_NAMESPACES`]).
pub const OTLP_SECRET: &str = "vigil-otlp-credentials";
pub const OTLP_USER: &str = "otlp";
/// The log shippers' user, and its Secret (copied into [`LOGS_NAMESPACE`]).
pub const LOGS_SECRET: &str = "vigil-logs-credentials";
pub const LOGS_USER: &str = "logs";
/// Where the log shippers run.
pub const LOGS_NAMESPACE: &str = "logging";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
/// The `OTEL_EXPORTER_OTLP_HEADERS` value.
pub const HEADERS_KEY: &str = "headers";
/// Where pods export spans from: the source Secret's namespace first.
pub const OTLP_NAMESPACES: [&str; 2] = [NAMESPACE, web::NAMESPACE];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {namespace}/{name}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{name} has no key {key}: delete it, run `vigil up` to generate it again, then \
         restart what reads it (they read it once, at start): `kubectl -n monitoring rollout restart \
         deployment,daemonset` and `kubectl -n default rollout restart deployment/web`"
    )]
    MissingKey { namespace: String, name: String, key: &'static str },
}

/// A user and its password; the password never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `Authorization`'s value.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// 32 random bytes, URL-safe base64 (43 characters): nothing to escape in a
/// URL, a header, a shell or a YAML file.
pub fn random_password() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `OTEL_EXPORTER_OTLP_HEADERS` carrying `credentials` as Basic auth.
pub fn otlp_headers(credentials: &Credentials) -> String {
    format!("Authorization={}", alerter_api::percent_encode(&credentials.basic_header()))
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/part-of".to_owned(), "vigil".to_owned()),
            ("app.kubernetes.io/managed-by".to_owned(), "vigil".to_owned()),
        ])),
        ..Default::default()
    }
}

fn secret(name: &str, namespace: &str, data: &[(&str, String)]) -> Secret {
    Secret {
        metadata: meta(name, namespace),
        type_: Some("Opaque".into()),
        string_data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
        ..Default::default()
    }
}

/// The generated Secrets, with new passwords: what `up` creates when missing.
pub fn generated() -> Vec<Secret> {
    let api = Credentials { username: API_USER.into(), password: random_password() };
    let otlp = Credentials { username: OTLP_USER.into(), password: random_password() };
    let logs = Credentials { username: LOGS_USER.into(), password: random_password() };
    vec![
        secret(API_SECRET, NAMESPACE, &[(USERNAME_KEY, api.username.clone()), (PASSWORD_KEY, api.password)]),
        secret(
            OTLP_SECRET,
            NAMESPACE,
            &[
                (HEADERS_KEY, otlp_headers(&otlp)),
                (USERNAME_KEY, otlp.username.clone()),
                (PASSWORD_KEY, otlp.password),
            ],
        ),
        secret(
            LOGS_SECRET,
            NAMESPACE,
            &[(USERNAME_KEY, logs.username.clone()), (PASSWORD_KEY, logs.password)],
        ),
    ]
}

/// The log shippers' Secret in [`LOGS_NAMESPACE`], from the one read back.
pub fn logs_copy(logs: &Credentials) -> Secret {
    let data = BTreeMap::from([
        (USERNAME_KEY.to_owned(), ByteString(logs.username.clone().into_bytes())),
        (PASSWORD_KEY.to_owned(), ByteString(logs.password.clone().into_bytes())),
    ]);
    Secret {
        metadata: meta(LOGS_SECRET, LOGS_NAMESPACE),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The OTLP header Secret in every other namespace whose pods export
/// spans, derived from the span senders' credentials `otlp` (read back).
pub fn otlp_copies(otlp: &Credentials) -> Vec<Secret> {
    // `data`, not `stringData`: these are applied (server-side), and the
    // API server never stores `stringData` for apply to compare.
    let data = BTreeMap::from([(HEADERS_KEY.to_owned(), ByteString(otlp_headers(otlp).into_bytes()))]);
    OTLP_NAMESPACES[1..]
        .iter()
        .map(|ns| Secret {
            metadata: meta(OTLP_SECRET, ns),
            type_: Some("Opaque".into()),
            data: Some(data.clone()),
            ..Default::default()
        })
        .collect()
}

fn key(secret: &Secret, key: &'static str) -> Result<String, Error> {
    let value = secret.data.as_ref().and_then(|d| d.get(key)).map(|ByteString(b)| b.clone());
    value.and_then(|b| String::from_utf8(b).ok()).filter(|v| !v.is_empty()).ok_or_else(|| Error::MissingKey {
        namespace: secret.metadata.namespace.clone().unwrap_or_default(),
        name: secret.metadata.name.clone().unwrap_or_default(),
        key,
    })
}

/// The user and password of the Secret `name` in the monitoring namespace.
pub async fn read(client: &Client, name: &str) -> Result<Credentials, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let secret = api.get(name).await.map_err(|source| Error::Read {
        namespace: NAMESPACE.into(),
        name: name.into(),
        source,
    })?;
    Ok(Credentials { username: key(&secret, USERNAME_KEY)?, password: key(&secret, PASSWORD_KEY)? })
}

/// vigil's own credentials, as the cluster holds them.
pub async fn read_api(client: &Client) -> Result<Credentials, Error> {
    read(client, API_SECRET).await
}

/// An environment variable from `key` of the pod's namespace's Secret `name`.
pub fn secret_env(variable: &str, name: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: variable.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_data(secret: &Secret) -> Secret {
        let data = secret
            .string_data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        Secret { data: Some(data), string_data: None, ..secret.clone() }
    }

    #[test]
    fn passwords_are_long_url_safe_and_new_each_time() {
        let (a, b) = (random_password(), random_password());
        assert_ne!(a, b);
        assert!(a.len() >= 32, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }

    #[test]
    fn the_header_decodes_to_the_senders_credentials() {
        let otlp = Credentials { username: "otlp".into(), password: "p/w+=x".into() };
        let headers = otlp_headers(&otlp);
        let value = headers.strip_prefix("Authorization=Basic%20").expect(&headers);
        assert!(!value.contains(['=', '+', '/', ' ', ',']), "percent-encoded: {value}");
        let decoded = value.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=");
        let pair = base64::engine::general_purpose::STANDARD.decode(decoded).unwrap();
        assert_eq!(String::from_utf8(pair).unwrap(), "otlp:p/w+=x");
    }

    #[test]
    fn the_copies_carry_the_header_of_the_password_read_back() {
        let secrets = generated();
        assert_eq!(
            secrets.iter().map(|s| s.metadata.name.clone().unwrap()).collect::<Vec<_>>(),
            [API_SECRET, OTLP_SECRET, LOGS_SECRET]
        );
        let source = as_data(&secrets[1]);
        let otlp = Credentials {
            username: key(&source, USERNAME_KEY).unwrap(),
            password: key(&source, PASSWORD_KEY).unwrap(),
        };
        assert_eq!(otlp.username, OTLP_USER);
        let copies = otlp_copies(&otlp);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(key(&copies[0], HEADERS_KEY).unwrap(), key(&source, HEADERS_KEY).unwrap());
        assert_eq!(copies[0].data.as_ref().unwrap().len(), 1, "the password itself stays in monitoring");
        let logs = Credentials { username: LOGS_USER.into(), password: "p".into() };
        let copy = logs_copy(&logs);
        assert_eq!(copy.metadata.namespace.as_deref(), Some(LOGS_NAMESPACE));
        assert_eq!(key(&copy, PASSWORD_KEY).unwrap(), "p");
        // Two generations never share a password.
        assert_ne!(generated()[0].string_data, secrets[0].string_data);
    }

    #[test]
    fn a_secret_without_its_key_names_the_fix() {
        let mut source = as_data(&generated()[0]);
        source.data.as_mut().unwrap().remove(PASSWORD_KEY);
        let err = key(&source, PASSWORD_KEY).unwrap_err().to_string();
        assert!(
            err.contains("monitoring/vigil-api-credentials has no key password") && err.contains("vigil up"),
            "{err}"
        );
        assert!(
            !format!("{:?}", Credentials { username: "u".into(), password: "s3cret".into() })
                .contains("s3cret")
        );
    }
}
