//! Each add-on of the table in `addons` is two steps: `install <name>`
//! applies its objects as soon as the API answers (and its images are on the
//! nodes), and `<name> ready` waits for its rollout, applies what must come
//! after it, and checks its address from the host the way a user would.
//! Installs do not wait for each other, so the pods of every add-on start
//! together once the nodes are Ready.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{PersistentVolumeClaim, Service},
};
use kube::Api;

use super::{Context, Error, Outcome, Result, Step, credentials, images, init, ready};
use crate::{
    addons::{Addon, Check, Input, Rollout},
    conditions, kubeadm, poll,
    progress::Line,
};

/// How long an add-on's address may take to appear and answer.
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(90);

fn install_name(addon: &Addon) -> String {
    format!("install {}", addon.name)
}

fn ready_name(name: &str) -> String {
    format!("{name} ready")
}

pub struct Install(pub &'static Addon);

#[async_trait]
impl Step for Install {
    fn name(&self) -> String {
        install_name(self.0)
    }

    fn needs(&self) -> Vec<String> {
        // The credentials first: pods that mount or read them wait for them otherwise.
        let mut needs = vec![init::NAME.to_owned(), credentials::NAME.to_owned()];
        // The deployables built here run replicas meant to be spread (web's
        // three, the alerter's two): applied before every node is Ready,
        // they all land on the first worker that is.
        if !self.0.crates.is_empty() {
            needs.extend([images::NAME.to_owned(), ready::NAME.to_owned()]);
        }
        needs.extend(self.0.installed_after.iter().map(|n| ready_name(n)));
        needs
    }

    fn title(&self, _: &Context) -> String {
        format!("install {}", self.0.title)
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let deployables = ctx.deployables.as_ref().ok_or(Error::OutOfOrder("the deployables' images"))?;
        let input = Input {
            spec: &ctx.spec,
            images: &deployables.images.refs,
            api_server: Some((ctx.control_plane().ip, kubeadm::API_SERVER_PORT)),
        };
        let applier = ctx.applier()?;
        let namespace: Vec<_> = self.0.namespace.iter().map(|namespace| namespace()).collect();
        applier.apply(&namespace).await?;
        if let Some(secrets) = self.0.secrets {
            applier.create_missing(&secrets(&input)).await?;
        }
        let objects = (self.0.objects)(&input)?;
        applier.apply(&objects).await?;
        Ok(Outcome::Done(format!("{} objects", objects.len())))
    }
}

pub struct Ready(pub &'static Addon);

#[async_trait]
impl Step for Ready {
    fn name(&self) -> String {
        ready_name(self.0.name)
    }

    fn needs(&self) -> Vec<String> {
        // Every node Ready first: a rollout's time is counted from when its
        // pods can be placed, not from while hosts are still being provisioned
        // (a slow host would otherwise fail the first rollout, hiding its own error).
        let mut needs = vec![install_name(self.0), ready::NAME.to_owned()];
        needs.extend(self.0.needs.iter().map(|n| ready_name(n)));
        needs
    }

    fn title(&self, _: &Context) -> String {
        match &self.0.address {
            Some(address) => format!("{} rolled out and answering at its LoadBalancer address", address.key),
            None => format!("{} rolled out", self.0.name),
        }
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let addon = self.0;
        let client = ctx.client()?;
        let context = ctx.spec.kube_context();
        let hint = format!(
            "`kubectl --context {context} get pods -A -o wide`, then `describe` and `logs` of the {} pods",
            addon.name
        );
        let timeout = |source| Error::timed_out(hint.clone())(source);
        for rollout in addon.rollout {
            let (what, waited) = match rollout {
                Rollout::Deployment { namespace, name, replicas } => {
                    let what = format!("deployment {namespace}/{name} rolled out");
                    line.update(&what);
                    let replicas = *replicas;
                    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                    let check = move |d: Option<&Deployment>| conditions::deployment_rolled_out(d, replicas);
                    (what.clone(), poll::watch_until(api, name, what, addon.timeout, check).await)
                }
                Rollout::DaemonSet { namespace, name } => {
                    let what = format!("daemonset {namespace}/{name} rolled out");
                    line.update(&what);
                    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
                    (
                        what.clone(),
                        poll::watch_until(api, name, what, addon.timeout, conditions::daemon_set_rolled_out)
                            .await,
                    )
                }
                Rollout::Claim { namespace, name } => {
                    let what = format!("claim {namespace}/{name} bound");
                    line.update(&what);
                    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
                    (
                        what.clone(),
                        poll::watch_until(api, name, what, addon.timeout, conditions::claim_bound).await,
                    )
                }
            };
            tracing::debug!(addon = addon.name, %what, ok = waited.is_ok(), "rollout");
            waited.map_err(timeout)?;
        }
        if let Some(after) = addon.after_rollout {
            // Its own admission webhook may take a moment after the rollout before it answers.
            let objects = after(&ctx.spec);
            let applier = ctx.applier()?;
            poll::until(
                format!("{} accepting its configuration", addon.name),
                ADDRESS_TIMEOUT,
                poll::EVERY,
                || async { applier.apply(&objects).await.map_err(|e| vigil_telemetry::error_chain(&e)) },
            )
            .await
            .map_err(timeout)?;
        }
        let Some(address) = &addon.address else {
            return Ok(Outcome::done());
        };
        line.update(format!(
            "Service {}/{} given a LoadBalancer address",
            address.namespace, address.service
        ));
        let services: Api<Service> = Api::namespaced(client.clone(), address.namespace);
        let what = format!("Service {}/{} has a LoadBalancer address", address.namespace, address.service);
        poll::watch_until(services.clone(), address.service, what, ADDRESS_TIMEOUT, |s: Option<&Service>| {
            s.and_then(conditions::load_balancer_ip)
                .map(|_| ())
                .ok_or_else(|| "no LoadBalancer address yet".into())
        })
        .await
        .map_err(timeout)?;
        let service = services
            .get(address.service)
            .await
            .map_err(|source| Error::Kube { step: "reading a Service", source })?;
        let ip = conditions::load_balancer_ip(&service).ok_or(Error::OutOfOrder("a LoadBalancer address"))?;
        let url = (address.url)(&ip);
        line.update(format!("GET {url} from the host"));
        let credentials = match address.check {
            Check::Gated(_) => Some(crate::addons::credentials::read_api(client).await?),
            Check::BodyStartsWith(_) => None,
        };
        let answer = answers(&url, &address.check, credentials.as_ref()).await.map_err(timeout)?;
        ctx.add_address(address.key, url.clone());
        Ok(Outcome::Done(format!("{url} {answer}")))
    }
}

/// Asks `url` from the host until it answers as `check` wants; what it
/// said. A gated address is asked without credentials too, and must refuse.
async fn answers(
    url: &str,
    check: &Check,
    credentials: Option<&crate::addons::credentials::Credentials>,
) -> Result<String, poll::Timeout> {
    // From the host, the way a user will try it; no proxy between.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain client builds");
    let target = match check {
        Check::BodyStartsWith(_) => url.to_owned(),
        Check::Gated(path) => format!("{url}{path}"),
    };
    poll::until(format!("{target} answering from the host"), ADDRESS_TIMEOUT, poll::EVERY, || async {
        let request = match (check, credentials) {
            (Check::BodyStartsWith(_), _) => http.get(&target),
            (Check::Gated(_), Some(credentials)) => {
                let anonymous = http.get(&target).send().await.map_err(|e| format!("GET {target}: {e}"))?;
                if anonymous.status() != reqwest::StatusCode::UNAUTHORIZED {
                    return Err(format!("GET {target} without credentials: {}, not 401", anonymous.status()));
                }
                http.get(&target).basic_auth(&credentials.username, Some(&credentials.password))
            }
            (Check::Gated(_), None) => return Err(format!("GET {target}: no credentials to ask with")),
        };
        let response = request.send().await.map_err(|e| format!("GET {target}: {e}"))?;
        let status = response.status();
        match check {
            Check::Gated(_) if status.is_success() => {
                Ok(format!("answers {status} to vigil's credentials, 401 without"))
            }
            Check::Gated(_) => Err(format!("GET {target}: {status}")),
            Check::BodyStartsWith(prefix) => {
                let body = response.text().await.map_err(|e| format!("GET {target}: {e}"))?;
                body.starts_with(prefix)
                    .then(|| format!("answers {:?}", body.trim()))
                    .ok_or_else(|| format!("GET {target} answered {body:?}"))
            }
        }
    })
    .await
}
