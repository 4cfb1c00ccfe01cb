//! Progress bars on stderr for transfers long enough to wait on: shown only when stderr
//! is a terminal and the transfer is large, so scripts and small transfers see nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressBarIter, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

/// Transfers at least this large get a bar.
const LARGE: u64 = 8 << 20;
/// How often the bar checks whether to show itself, and redraws.
const TICK: Duration = Duration::from_millis(200);

/// A byte-count progress bar, hidden until the transfer proves large.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    /// Shows the bar once the transfer is large; stopped when the progress is dropped.
    reveal: Option<JoinHandle<()>>,
}

impl Progress {
    /// A progress of `total` bytes, or of an unknown amount. Must be called within the
    /// async runtime.
    pub fn start(what: &str, total: Option<u64>) -> Self {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden())
            .with_message(what.to_owned());
        set_style(&bar);
        let reveal = std::io::stderr().is_terminal().then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    if bar.is_finished() {
                        return;
                    }
                    if bar.length().unwrap_or(0) >= LARGE || bar.position() >= LARGE {
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        bar.enable_steady_tick(TICK);
                        return;
                    }
                }
            })
        });
        Self { bar, reveal }
    }

    /// Sets the total, once it is known.
    pub fn set_total(&self, total: u64) {
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
            set_style(&self.bar);
        }
    }

    /// Sets the bytes done.
    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// `reader`, counting what is read from it (seeks back move the count back).
    pub fn wrap<R: AsyncRead + Unpin>(&self, reader: R) -> ProgressBarIter<R> {
        self.bar.wrap_async_read(reader)
    }
}

impl Drop for Progress {
    /// Clears the bar, so the command's output or error line is all that is left.
    fn drop(&mut self) {
        if let Some(reveal) = self.reveal.take() {
            reveal.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn set_style(bar: &ProgressBar) {
    let template = if bar.length().is_some() {
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{spinner} {msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
}
