//! The credentials of the proxied addresses, before any add-on that uses
//! them: the generated Secrets created when missing (never replaced), the
//! span senders' header copied into every namespace whose pods export
//! spans from the Secret read back (so it matches whichever `up` generated
//! it), the log shippers' Secret copied into `logging` the same way, and
//! vigil's password written to the user's file on the host.

use async_trait::async_trait;

use super::{Context, Outcome, Result, Step, init};
use crate::{
    addons::{credentials, node_exporter, vlagent},
    apply::Object,
    password_file::{self, HostCredentials},
    progress::Line,
};

pub const NAME: &str = "credentials";

/// `dir`: where the per-cluster password files are (`password_file::default_dir`).
pub struct Credentials {
    pub dir: std::path::PathBuf,
}

#[async_trait]
impl Step for Credentials {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![init::NAME.into()]
    }

    fn title(&self, _: &Context) -> String {
        "credentials for Prometheus, Alertmanager, Jaeger and VictoriaLogs".into()
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let (applier, client) = (ctx.applier()?, ctx.client()?);
        applier.apply(&[node_exporter::namespace(), vlagent::namespace()]).await?;
        applier.create_missing(&credentials::generated()).await?;
        line.update("the span senders' header and the log shippers' password where they run");
        let otlp = credentials::read(client, credentials::OTLP_SECRET).await?;
        let logs = credentials::read(client, credentials::LOGS_SECRET).await?;
        let copies: Vec<Object> = credentials::otlp_copies(&otlp)
            .into_iter()
            .chain([credentials::logs_copy(&logs)])
            .map(Object::typed)
            .collect();
        applier.apply(&copies).await?;
        let api = credentials::read_api(client).await?;
        let file = password_file::path(&self.dir, &ctx.spec.name);
        let changed = password_file::write(&file, &api.password)?;
        let shown = format!("user {}, password in {}", api.username, file.display());
        ctx.set_credentials(HostCredentials { username: api.username, password_file: file });
        Ok(if changed { Outcome::Done(shown) } else { Outcome::Skipped(format!("unchanged: {shown}")) })
    }
}
