//! Status lines for long work. On a terminal a lone line redraws itself in
//! place; when several run at once (`up`'s concurrent steps), or elsewhere
//! (CI logs), a line is printed when it starts, when its detail changes
//! after a quiet spell, and when it ends, so a log shows progress without
//! drowning in it. Each line shows its own elapsed time.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How often a non-terminal log repeats an unchanged, still-running line.
const QUIET_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Progress {
    tty: bool,
    out: Arc<Mutex<Shared>>,
}

/// The terminal's state: which line, if any, was drawn without a newline.
#[derive(Default)]
struct Shared {
    open: Option<u64>,
    active: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for Progress {
    fn default() -> Self {
        Progress { tty: std::io::stderr().is_terminal(), out: Arc::default() }
    }
}

impl Progress {
    /// Starts a line for a piece of long work.
    pub fn line(&self, title: impl Into<String>) -> Line {
        self.out.lock().expect("not poisoned").active += 1;
        let line = Line {
            progress: self.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            title: title.into(),
            started: Instant::now(),
            last_print: Mutex::new(Instant::now()),
            finished: Mutex::new(false),
        };
        line.print("•", "");
        line
    }

    pub fn info(&self, text: impl AsRef<str>) {
        let mut shared = self.out.lock().expect("not poisoned");
        let mut err = std::io::stderr().lock();
        if shared.open.take().is_some() {
            let _ = writeln!(err);
        }
        let _ = writeln!(err, "{}", text.as_ref());
    }
}

pub struct Line {
    progress: Progress,
    id: u64,
    title: String,
    started: Instant,
    last_print: Mutex<Instant>,
    finished: Mutex<bool>,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}

impl Line {
    fn print(&self, mark: &str, detail: &str) {
        let mut shared = self.progress.out.lock().expect("not poisoned");
        let elapsed = human(self.started.elapsed());
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        let text = format!(" {mark} {}{detail} ({elapsed})", self.title);
        let mut err = std::io::stderr().lock();
        let running = mark == "•";
        // Redraw in place only a lone line on a terminal.
        let in_place = self.progress.tty && shared.active <= 1;
        match shared.open {
            Some(id) if id == self.id && in_place => {
                let _ = write!(err, "\r\x1b[2K");
            }
            Some(_) => {
                let _ = writeln!(err);
            }
            None => {}
        }
        shared.open = None;
        if in_place && running {
            let _ = write!(err, "{text}");
            shared.open = Some(self.id);
        } else {
            let _ = writeln!(err, "{text}");
        }
        *self.last_print.lock().expect("not poisoned") = Instant::now();
    }

    /// A new detail for a running line (package counts, what is awaited, ...).
    pub fn update(&self, detail: impl AsRef<str>) {
        let in_place = self.progress.tty && self.progress.out.lock().expect("not poisoned").active <= 1;
        let due = in_place || self.last_print.lock().expect("not poisoned").elapsed() >= QUIET_INTERVAL;
        if due {
            self.print("•", detail.as_ref());
        }
    }

    pub fn done(&self) {
        self.finish("✓", "");
    }

    pub fn done_with(&self, detail: impl AsRef<str>) {
        self.finish("✓", detail.as_ref());
    }

    pub fn skipped(&self, why: impl AsRef<str>) {
        self.finish("-", why.as_ref());
    }

    pub fn failed(&self) {
        self.finish("✗", "failed");
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn finish(&self, mark: &str, detail: &str) {
        let mut finished = self.finished.lock().expect("not poisoned");
        if *finished {
            return;
        }
        *finished = true;
        self.print(mark, detail);
        self.progress.out.lock().expect("not poisoned").active -= 1;
    }
}

impl Drop for Line {
    /// A line dropped before it finished was stopped: its error travels up
    /// by `?`, or another step's failure cancelled it.
    fn drop(&mut self) {
        self.finish("✗", "stopped");
    }
}
