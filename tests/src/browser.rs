//! Pages opened as a user opens them: Debian's Chromium, headless, on the
//! addresses `vigil up` prints. A user types vigil's password into the
//! browser's prompt once, and the browser then sends it with every request
//! to that origin, the UI's own `fetch()` calls included. Headless Chromium
//! has no prompt, and credentials in the URL break those calls (a page whose
//! URL holds credentials may not fetch), so the test does what the prompt
//! would: Chromium goes through a forward proxy on loopback that adds the
//! `Authorization` header to requests for the cluster's addresses and
//! refuses anything else. The page's address stays the real one.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use axum::{
    body::Body,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::process::Command;

/// The Chromium Debian packages.
pub const CHROMIUM: &str = "chromium";
/// How long a page may take to settle (Chromium's virtual time: scripts,
/// timers and the UI's requests run until then).
const SETTLE: Duration = Duration::from_secs(10);
/// How many times a page is opened before its check fails.
pub const ATTEMPTS: u32 = 3;
/// A browser window's usual size, in pixels.
pub const WINDOW: (u32, u32) = (1280, 900);
/// How long one Chromium run may take in real time.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone)]
struct Forward {
    http: reqwest::Client,
    /// The only hosts it forwards to: the cluster's addresses.
    allowed: Vec<IpAddr>,
    authorization: String,
}

/// A headless Chromium behind a proxy that carries vigil's credentials.
pub struct Browser {
    proxy: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    /// Where the screenshots go.
    pub dir: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(f): State<Forward>, request: Request) -> Response {
    let uri = request.uri().clone();
    let host = uri.host().and_then(|h| h.parse::<IpAddr>().ok());
    if !host.is_some_and(|h| f.allowed.contains(&h)) {
        return (
            StatusCode::FORBIDDEN,
            format!("vigil-e2e's proxy forwards only to the cluster's addresses, not {uri}"),
        )
            .into_response();
    }
    let method = request.method().clone();
    let mut headers = request.headers().clone();
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove("proxy-connection");
    let body = match axum::body::to_bytes(request.into_body(), 16 << 20).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let sent = f
        .http
        .request(method, uri.to_string())
        .headers(headers)
        .header(header::AUTHORIZATION, &f.authorization)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                // The framing is the proxy's own.
                if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
                    response = response.header(name, value);
                }
            }
            // Streamed as it comes: the UIs keep some answers open (Prometheus's
            // notifications are server-sent events).
            let chunks = futures::stream::unfold(answer, |mut answer| async move {
                match answer.chunk().await {
                    Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), answer)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), answer)),
                }
            });
            response
                .body(Body::from_stream(chunks))
                .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl Browser {
    /// A browser for the addresses in `allowed`, with `authorization` (the
    /// header's value) on every request; screenshots in `dir`.
    pub async fn start(allowed: Vec<IpAddr>, authorization: String, dir: &Path) -> Result<Self> {
        which(CHROMIUM)?;
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        // Compressed bodies and redirects are passed through as they came:
        // the browser follows a redirect itself, and resolves the page's
        // relative links against where it was sent.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()?;
        let state = Forward { http, allowed, authorization };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Browser { proxy, server, dir: dir.to_owned() })
    }

    /// The proxy's address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    fn chromium(&self, profile: &Path, (width, height): (u32, u32)) -> Command {
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--proxy-server=http://{}", self.proxy))
            // Chromium sends loopback and LAN addresses through the proxy only if told.
            .arg("--proxy-bypass-list=<-loopback>")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={}", SETTLE.as_millis()))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Opens `url` until `check` accepts its DOM, in a window of `size`
    /// pixels (a long page's screenshot is tall). Each attempt is one
    /// Chromium run, so the screenshot `<name>.png` and the DOM `<name>.html`
    /// kept beside it show the same moment of the page. A UI on a busy
    /// machine may draw after the settle budget, so a page is opened up to
    /// [`ATTEMPTS`] times, as a user would reload it.
    pub async fn open<F>(&self, url: &str, name: &str, size: (u32, u32), check: F) -> Result<()>
    where
        F: Fn(&str) -> Result<()>,
    {
        let screenshot = self.dir.join(format!("{name}.png"));
        let dom_file = self.dir.join(format!("{name}.html"));
        let mut attempt = 1;
        loop {
            let profile = tempfile::tempdir()?;
            let _ = std::fs::remove_file(&screenshot);
            let mut chromium = self.chromium(profile.path(), size);
            chromium.arg(format!("--screenshot={}", screenshot.display())).arg("--dump-dom").arg(url);
            let dom = run(chromium, url).await?;
            std::fs::write(&dom_file, &dom).with_context(|| dom_file.display().to_string())?;
            ensure!(screenshot.exists(), "Chromium wrote no screenshot of {url}");
            match check(&dom) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == ATTEMPTS => bail!(
                    "{e:#} ({url}, opened {ATTEMPTS} times; what it showed: {} and {})",
                    screenshot.display(),
                    dom_file.display()
                ),
                Err(_) => attempt += 1,
            }
        }
    }
}

async fn run(mut command: Command, url: &str) -> Result<String> {
    let out = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .with_context(|| format!("Chromium on {url} took over {RUN_TIMEOUT:?}"))??;
    if !out.status.success() {
        bail!("Chromium on {url}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    ensure!(found, "{program} is not installed: `apt-get install {program}` (./vigil.sh test installs it)");
    Ok(())
}
