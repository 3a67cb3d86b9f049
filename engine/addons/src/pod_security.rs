//! Pod Security Admission for the namespaces vigil creates or uses. Where
//! every pod vigil runs passes the `restricted` profile (`default`,
//! `monitoring`), the namespace enforces it, so a pod that asks for the
//! host's network, a host path, privileges or root is refused there. Where
//! a component needs more (flannel, local-path-provisioner's helper pods),
//! the namespace enforces what it needs and warns and audits against
//! `restricted`, with the reason in an annotation. Each level is pinned to
//! the cluster's Kubernetes minor, so a newer API server does not tighten
//! or loosen it unannounced.

use std::collections::BTreeMap;

use vigil_model::versions;

const PREFIX: &str = "pod-security.kubernetes.io";
/// Why a namespace does not enforce `restricted`.
pub const REASON_ANNOTATION: &str = "vigil.local/pod-security-reason";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The policy version the labels pin: the cluster's minor.
pub fn version() -> String {
    format!("v1.{}", versions::KUBERNETES_MINOR)
}

/// A namespace's Pod Security labels: `enforce` at `level` and, below
/// `restricted`, `warn` and `audit` at `restricted`; each with its version.
pub fn labels(level: Level) -> BTreeMap<String, String> {
    let mut modes = vec![("enforce", level)];
    if level != Level::Restricted {
        modes.extend([("warn", Level::Restricted), ("audit", Level::Restricted)]);
    }
    modes
        .into_iter()
        .flat_map(|(mode, level)| {
            [
                (format!("{PREFIX}/{mode}"), level.as_str().to_owned()),
                (format!("{PREFIX}/{mode}-version"), version()),
            ]
        })
        .collect()
}

/// The annotation that says why a namespace enforces less than `restricted`.
pub fn reason(why: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(REASON_ANNOTATION.to_owned(), why.to_owned())])
}

/// `default`, which exists in every cluster: vigil labels it (a server-side
/// apply of the labels alone). web is its only pod, and passes `restricted`.
pub fn default_namespace() -> crate::apply::Object {
    use k8s_openapi::api::core::v1::Namespace;
    crate::apply::Object::typed(Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("default".into()),
            labels: Some(labels(Level::Restricted)),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// What the `restricted` profile (as of v1.34) finds wrong with `spec`,
/// one line per violation: the rules a pod spec vigil writes could break.
/// The API server's admission is the authority (the end-to-end test asks
/// it); this lets a unit test find a violation before a cluster does.
pub fn restricted_violations(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut found = vec![];
    for (what, on) in
        [("hostNetwork", spec.host_network), ("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)]
    {
        if on == Some(true) {
            found.push(format!("{what} is set"));
        }
    }
    for volume in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        let kinds: Vec<&String> =
            value.as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| *k != "name").collect();
        if let Some(kind) = kinds.iter().find(|k| !VOLUMES.contains(&k.as_str())) {
            found.push(format!("volume {} is a {kind}", volume.name));
        }
    }
    let pod = spec.security_context.clone().unwrap_or_default();
    let pod_seccomp = pod.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    for c in containers {
        let context = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if context.privileged == Some(true) {
            found.push(format!("container {name} is privileged"));
        }
        if context.allow_privilege_escalation != Some(false) {
            found.push(format!("container {name} does not set allowPrivilegeEscalation: false"));
        }
        if context.run_as_non_root.or(pod.run_as_non_root) != Some(true) {
            found.push(format!("container {name} does not set runAsNonRoot: true"));
        }
        if context.run_as_user.or(pod.run_as_user) == Some(0) {
            found.push(format!("container {name} runs as user 0"));
        }
        let seccomp = context.seccomp_profile.as_ref().map(|p| p.type_.as_str()).or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("container {name} has no RuntimeDefault or Localhost seccomp profile"));
        }
        let capabilities = context.capabilities.unwrap_or_default();
        if !capabilities.drop.iter().flatten().any(|d| d == "ALL") {
            found.push(format!("container {name} does not drop ALL capabilities"));
        }
        if let Some(added) = capabilities.add.iter().flatten().find(|a| *a != "NET_BIND_SERVICE") {
            found.push(format!("container {name} adds capability {added}"));
        }
        if c.ports.iter().flatten().any(|p| p.host_port.is_some_and(|h| h != 0)) {
            found.push(format!("container {name} uses a host port"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;
    use crate::apply::Object;

    #[test]
    fn below_restricted_warns_and_audits_against_it_all_pinned() {
        let privileged = labels(Level::Privileged);
        assert_eq!(privileged["pod-security.kubernetes.io/enforce"], "privileged");
        assert_eq!(privileged["pod-security.kubernetes.io/warn"], "restricted");
        assert_eq!(privileged["pod-security.kubernetes.io/audit"], "restricted");
        for mode in ["enforce", "warn", "audit"] {
            assert_eq!(privileged[&format!("pod-security.kubernetes.io/{mode}-version")], "v1.34");
        }
        let restricted = labels(Level::Restricted);
        assert_eq!(restricted.len(), 2, "{restricted:?}");
        assert_eq!(restricted["pod-security.kubernetes.io/enforce-version"], "v1.34");
        assert_eq!(vigil_model::versions::KUBERNETES.rsplit_once('.').unwrap().0, version());
    }

    /// Every object vigil applies: the add-ons' (with their namespaces) and flannel's.
    fn everything() -> Vec<Object> {
        let spec = vigil_model::cluster::ClusterSpec::default();
        let images = crate::crates().into_iter().map(|c| (c, format!("img/{c}"))).collect();
        let input =
            crate::Input { spec: &spec, images: &images, api_server: Some(([172, 29, 0, 2].into(), 6443)) };
        let mut objects = crate::flannel::objects(&spec, "img/flannel", ([172, 29, 0, 2].into(), 6443));
        for addon in crate::ADDONS {
            objects.extend(addon.namespace.map(|n| n()));
            objects.extend((addon.objects)(&input).unwrap());
        }
        objects
    }

    /// Each namespace's enforced level, from the Namespace objects applied.
    fn enforced(objects: &[Object]) -> BTreeMap<String, String> {
        let mut levels = BTreeMap::new();
        for object in objects {
            if object.kind() != "Namespace" {
                continue;
            }
            let value = object.to_json();
            let name = value["metadata"]["name"].as_str().unwrap().to_owned();
            let level =
                value["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str().unwrap_or("");
            levels.insert(name, level.to_owned());
        }
        levels
    }

    fn pod_templates(objects: &[Object]) -> Vec<(String, String, PodSpec)> {
        let mut pods = vec![];
        for object in objects {
            if !["Deployment", "DaemonSet"].contains(&object.kind()) {
                continue;
            }
            let value = object.to_json();
            let spec: PodSpec = serde_json::from_value(value["spec"]["template"]["spec"].clone()).unwrap();
            let namespace = value["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
            pods.push((namespace, value["metadata"]["name"].as_str().unwrap().to_owned(), spec));
        }
        pods
    }

    #[test]
    fn every_namespace_vigil_runs_pods_in_has_an_enforced_level() {
        let objects = everything();
        let levels = enforced(&objects);
        for (namespace, name, _) in pod_templates(&objects) {
            let level = levels.get(&namespace).map(String::as_str).unwrap_or("");
            assert!(!level.is_empty(), "{namespace} (of {name}) enforces no Pod Security level");
        }
        assert_eq!(levels["default"], "restricted");
        assert_eq!(levels["monitoring"], "restricted");
        assert_eq!(levels["logging"], "privileged");
    }

    #[test]
    fn every_pod_in_a_restricted_namespace_passes_restricted() {
        let objects = everything();
        let levels = enforced(&objects);
        let mut checked = 0;
        for (namespace, name, spec) in pod_templates(&objects) {
            if levels.get(&namespace).map(String::as_str) != Some("restricted") {
                continue;
            }
            let violations = restricted_violations(&spec);
            assert!(violations.is_empty(), "{namespace}/{name}: {violations:?}");
            checked += 1;
        }
        // web, node-exporter, kube-state-metrics, Prometheus, Alertmanager, Jaeger, VictoriaLogs, the alerter.
        assert_eq!(checked, 8);
    }

    #[test]
    fn namespaces_below_restricted_say_why() {
        let objects = everything();
        for object in &objects {
            if object.kind() != "Namespace" {
                continue;
            }
            let value = object.to_json();
            let meta = &value["metadata"];
            let name = meta["name"].as_str().unwrap();
            // MetalLB's namespace is upstream's: privileged everywhere, for its speaker.
            if meta["labels"]["pod-security.kubernetes.io/enforce"] != "restricted"
                && name != "metallb-system"
            {
                assert!(meta["annotations"][REASON_ANNOTATION].is_string(), "{name} gives no reason: {meta}");
                assert_eq!(meta["labels"]["pod-security.kubernetes.io/warn"], "restricted", "{name}");
            }
        }
    }

    #[test]
    fn the_checker_finds_what_restricted_refuses() {
        let privileged: PodSpec = serde_json::from_value(serde_json::json!({
            "hostNetwork": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}}}]
        }))
        .unwrap();
        let found = restricted_violations(&privileged).join("\n");
        for expected in [
            "hostNetwork is set",
            "volume root is a hostPath",
            "container c is privileged",
            "container c does not set allowPrivilegeEscalation: false",
            "container c does not set runAsNonRoot: true",
            "container c has no RuntimeDefault or Localhost seccomp profile",
            "container c does not drop ALL capabilities",
            "container c adds capability SYS_ADMIN",
        ] {
            assert!(found.contains(expected), "{expected} not in\n{found}");
        }
    }
}
