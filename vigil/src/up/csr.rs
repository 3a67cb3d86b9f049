//! What makes a kubelet serving certificate request one vigil approves (the
//! checks kubelet-csr-approver makes, with the provider's knowledge of each
//! node in place of DNS lookups): asked by a node of this cluster, for that
//! node's own name and address only, as a kubelet asks. kubeadm's
//! `serverTLSBootstrap` leaves these requests to an approver; a node's
//! credentials could otherwise get a certificate, signed by the cluster CA,
//! for another node's address or the API server's name.

use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName, extensions::ParsedExtension,
    prelude::FromDer,
};

use crate::provider::NodeSpec;

pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";
/// What a kubelet asks for: `server auth` always, `digital signature` and,
/// for an RSA key, `key encipherment` (what the API server itself accepts
/// for this signer).
const REQUIRED_USAGE: &str = "server auth";
const ALLOWED_USAGES: [&str; 3] = ["digital signature", "key encipherment", REQUIRED_USAGE];

/// What to do with one request.
#[derive(Debug, PartialEq)]
pub enum Verdict<'a> {
    /// Not a serving certificate, or decided already: not vigil's to judge.
    NotOurs,
    /// The serving certificate of this node, for its own names.
    Approve(&'a NodeSpec),
    /// Left pending, for this reason.
    Refuse(String),
}

/// The verdict on `csr` for a cluster of `nodes`.
pub fn verdict<'a>(csr: &CertificateSigningRequest, nodes: &'a [NodeSpec]) -> Verdict<'a> {
    let decided = csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| !c.is_empty());
    if decided || csr.spec.signer_name != KUBELET_SERVING {
        return Verdict::NotOurs;
    }
    match check(csr, nodes) {
        Ok(node) => Verdict::Approve(node),
        Err(reason) => Verdict::Refuse(reason),
    }
}

fn check<'a>(csr: &CertificateSigningRequest, nodes: &'a [NodeSpec]) -> Result<&'a NodeSpec, String> {
    let spec = &csr.spec;
    let username = spec.username.as_deref().unwrap_or_default();
    let node = username
        .strip_prefix(NODE_PREFIX)
        .and_then(|name| nodes.iter().find(|n| n.name == name))
        .ok_or_else(|| format!("requested by {username:?}, not a node of this cluster"))?;
    if !spec.groups.iter().flatten().any(|g| g == NODES_GROUP) {
        return Err(format!("the requester is not in the group {NODES_GROUP}"));
    }
    let usages: Vec<&str> = spec.usages.iter().flatten().map(String::as_str).collect();
    if !usages.contains(&REQUIRED_USAGE) || usages.iter().any(|u| !ALLOWED_USAGES.contains(u)) {
        return Err(format!(
            "usages {usages:?}: a kubelet asks for {REQUIRED_USAGE:?} and at most {ALLOWED_USAGES:?}"
        ));
    }
    let names = requested_names(&spec.request.0)?;
    let own_name = format!("{NODE_PREFIX}{}", node.name);
    if names.common_names != [own_name.as_str()] {
        return Err(format!("subject CN {:?} is not {own_name:?}", names.common_names));
    }
    if names.organizations != [NODES_GROUP] {
        return Err(format!("subject O {:?} is not [{NODES_GROUP:?}]", names.organizations));
    }
    if names.dns.is_empty() && names.ips.is_empty() {
        return Err("no DNS name or IP address to serve".into());
    }
    if let Some(other) = names.other.first() {
        return Err(format!("asks for a SAN of kind {other}, which a kubelet never does"));
    }
    if let Some(dns) = names.dns.iter().find(|d| **d != node.name) {
        return Err(format!("asks for the DNS name {dns:?}, not {}'s own", node.name));
    }
    if let Some(ip) = names.ips.iter().find(|ip| **ip != IpAddr::V4(node.ip)) {
        return Err(format!("asks for the address {ip}, not {}'s own ({})", node.name, node.ip));
    }
    Ok(node)
}

/// The subject and alternative names a request asks for.
#[derive(Debug, Default)]
struct Names {
    common_names: Vec<String>,
    organizations: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    /// Kinds of SAN a kubelet never asks for (e-mail, URI, ...).
    other: Vec<&'static str>,
}

fn requested_names(pem: &[u8]) -> Result<Names, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("the request is not PEM: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!("the request is a PEM {:?}, not a CERTIFICATE REQUEST", pem.label));
    }
    let (_, request) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| format!("the request does not parse: {e}"))?;
    let subject = &request.certification_request_info.subject;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue| {
        attr.as_str().map_or_else(|_| "<not text>".to_owned(), str::to_owned)
    };
    let mut names = Names {
        common_names: subject.iter_common_name().map(text).collect(),
        organizations: subject.iter_organization().map(text).collect(),
        ..Default::default()
    };
    for extension in request.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = extension else { continue };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(dns) => names.dns.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.ips.push(IpAddr::from(v6));
                    } else {
                        names.other.push("malformed IP");
                    }
                }
                GeneralName::RFC822Name(_) => names.other.push("e-mail"),
                GeneralName::URI(_) => names.other.push("URI"),
                _ => names.other.push("non-DNS, non-IP"),
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{ByteString, api::certificates::v1::CertificateSigningRequestSpec};

    use super::*;

    fn nodes() -> Vec<NodeSpec> {
        crate::provider::numbered_plan(&crate::cluster::ClusterSpec::default())
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csr").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A pending serving request from `requester` (in system:nodes) with the PEM of `fixture`.
    fn request(requester: &str, fixture_name: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(fixture(fixture_name)),
                signer_name: KUBELET_SERVING.into(),
                username: Some(requester.into()),
                groups: Some(vec!["system:nodes".into(), "system:authenticated".into()]),
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn refusal(csr: &CertificateSigningRequest) -> String {
        match verdict(csr, &nodes()) {
            Verdict::Refuse(reason) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_nodes_own_request_is_approved() {
        let nodes = nodes();
        let csr = request("system:node:vigil-worker", "vigil-worker.pem");
        assert_eq!(verdict(&csr, &nodes), Verdict::Approve(&nodes[1]));
    }

    #[test]
    fn a_request_for_another_nodes_address_is_refused() {
        let reason = refusal(&request("system:node:vigil-worker", "foreign-ip.pem"));
        assert_eq!(reason, "asks for the address 172.29.0.2, not vigil-worker's own (172.29.0.3)");
    }

    #[test]
    fn a_request_for_a_name_that_is_not_the_nodes_is_refused() {
        let reason = refusal(&request("system:node:vigil-worker", "foreign-dns.pem"));
        assert_eq!(reason, r#"asks for the DNS name "kubernetes.default.svc", not vigil-worker's own"#);
    }

    #[test]
    fn a_node_asking_for_another_nodes_certificate_is_refused() {
        let reason = refusal(&request("system:node:vigil-worker", "other-node.pem"));
        assert_eq!(reason, r#"subject CN ["system:node:vigil-worker2"] is not "system:node:vigil-worker""#);
    }

    #[test]
    fn a_requester_that_is_not_a_node_of_this_cluster_is_refused() {
        let reason = refusal(&request("system:node:someone-else", "vigil-worker.pem"));
        assert!(reason.contains(r#""system:node:someone-else", not a node of this cluster"#), "{reason}");
        let reason = refusal(&request("system:serviceaccount:default:x", "vigil-worker.pem"));
        assert!(reason.contains("not a node of this cluster"), "{reason}");
        let mut outside = request("system:node:vigil-worker", "vigil-worker.pem");
        outside.spec.groups = Some(vec!["system:authenticated".into()]);
        assert_eq!(refusal(&outside), "the requester is not in the group system:nodes");
    }

    #[test]
    fn email_uri_and_missing_sans_and_other_groups_are_refused() {
        let reason = refusal(&request("system:node:vigil-worker", "email-uri.pem"));
        assert_eq!(reason, "asks for a SAN of kind e-mail, which a kubelet never does");
        let reason = refusal(&request("system:node:vigil-worker", "masters.pem"));
        assert_eq!(reason, r#"subject O ["system:masters"] is not ["system:nodes"]"#);
        let reason = refusal(&request("system:node:vigil-worker", "no-san.pem"));
        assert_eq!(reason, "no DNS name or IP address to serve");
    }

    #[test]
    fn usages_beyond_a_serving_certificates_are_refused() {
        let mut client = request("system:node:vigil-worker", "vigil-worker.pem");
        client.spec.usages =
            Some(vec!["digital signature".into(), "server auth".into(), "client auth".into()]);
        assert!(refusal(&client).contains("client auth"));
        let mut no_server = request("system:node:vigil-worker", "vigil-worker.pem");
        no_server.spec.usages = Some(vec!["digital signature".into()]);
        assert!(refusal(&no_server).starts_with("usages"));
    }

    #[test]
    fn a_request_that_is_not_a_csr_is_refused_not_approved() {
        let mut garbage = request("system:node:vigil-worker", "vigil-worker.pem");
        garbage.spec.request = ByteString(b"not pem".to_vec());
        assert!(refusal(&garbage).starts_with("the request is not PEM"), "{}", refusal(&garbage));
    }

    #[test]
    fn other_signers_and_decided_requests_are_left_alone() {
        let mut client = request("system:node:vigil-worker", "vigil-worker.pem");
        client.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet".into();
        assert_eq!(verdict(&client, &nodes()), Verdict::NotOurs);
        let mut decided = request("system:node:vigil-worker", "foreign-ip.pem");
        decided.status = Some(k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
            conditions: Some(vec![Default::default()]),
            ..Default::default()
        });
        assert_eq!(verdict(&decided, &nodes()), Verdict::NotOurs);
    }
}
