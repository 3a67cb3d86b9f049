//! CoreDNS answers for the API server's Service name, asked from the
//! control plane node the way a pod would (through the Service address).

use std::time::Duration;

use async_trait::async_trait;

use super::{Context, Error, Outcome, Result, Step, ready};
use crate::{poll, progress::Line};

const NAME: &str = "kubernetes.default.svc.cluster.local";
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Dns;

#[async_trait]
impl Step for Dns {
    fn name(&self) -> String {
        "dns".into()
    }

    fn needs(&self) -> Vec<String> {
        vec![ready::NAME.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!("CoreDNS answers at {}", ctx.spec.dns_service_ip())
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let dns = ctx.spec.dns_service_ip().to_string();
        let expected = ctx.spec.api_service_ip().to_string();
        let cp = ctx.node(ctx.control_plane());
        let server = format!("@{dns}");
        poll::until("DNS", TIMEOUT, Duration::from_millis(250), || async {
            match cp.run(&["dig", "+short", "+time=1", "+tries=1", &server, NAME], None).await {
                Ok(out) if out.stdout.trim() == expected => Ok(()),
                Ok(out) => {
                    Err(format!("{NAME} via {dns} answered {:?}, expected {expected}", out.stdout.trim()))
                }
                Err(e) => Err(format!("{NAME} via {dns}: {e}")),
            }
        })
        .await
        .map_err(Error::timed_out(format!(
            "CoreDNS logs: `kubectl --context {} -n kube-system logs -l k8s-app=kube-dns`",
            ctx.spec.kube_context()
        )))?;
        Ok(Outcome::Done(format!("{NAME} = {expected}")))
    }
}
