//! Status lines for long work. On a terminal a step redraws its own line;
//! elsewhere (CI logs) it prints a line when it starts, when its message
//! changes after a quiet spell, and when it ends, so a log shows progress
//! without drowning in it.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How often a non-terminal log repeats an unchanged, still-running step.
const QUIET_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Progress {
    tty: bool,
    out: Arc<Mutex<()>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { tty: std::io::stderr().is_terminal(), out: Arc::default() }
    }
}

impl Progress {
    pub fn step(&self, title: impl Into<String>) -> Step {
        let step = Step {
            progress: self.clone(),
            title: title.into(),
            started: Instant::now(),
            last_print: Mutex::new(Instant::now()),
            finished: Mutex::new(false),
        };
        step.print("•", "");
        step
    }

    pub fn info(&self, line: impl AsRef<str>) {
        let _guard = self.out.lock();
        eprintln!("{}", line.as_ref());
    }
}

pub struct Step {
    progress: Progress,
    title: String,
    started: Instant,
    last_print: Mutex<Instant>,
    finished: Mutex<bool>,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}

impl Step {
    fn print(&self, mark: &str, detail: &str) {
        let _guard = self.progress.out.lock();
        let elapsed = human(self.started.elapsed());
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        let mut err = std::io::stderr().lock();
        if self.progress.tty {
            let _ = write!(err, "\r\x1b[2K {mark} {}{detail} ({elapsed})", self.title);
            if mark != "•" {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, " {mark} {}{detail} ({elapsed})", self.title);
        }
        *self.last_print.lock().unwrap() = Instant::now();
    }

    /// A new detail for a running step (package counts, current node, ...).
    pub fn update(&self, detail: impl AsRef<str>) {
        let due = self.progress.tty || self.last_print.lock().unwrap().elapsed() >= QUIET_INTERVAL;
        if due {
            self.print("•", detail.as_ref());
        }
    }

    pub fn done(self) {
        self.finish("✓", "");
    }

    pub fn done_with(self, detail: impl AsRef<str>) {
        self.finish("✓", detail.as_ref());
    }

    pub fn skipped(self, why: impl AsRef<str>) {
        self.finish("-", why.as_ref());
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn finish(&self, mark: &str, detail: &str) {
        *self.finished.lock().unwrap() = true;
        self.print(mark, detail);
    }
}

impl Drop for Step {
    /// A step dropped before `done` failed (its error travels up by `?`).
    fn drop(&mut self) {
        if !*self.finished.lock().unwrap() {
            self.print("✗", "failed");
        }
    }
}
