//! Progress reporting: an indicatif bar on stderr when stderr is a terminal, one plain line per
//! finished step otherwise (CI logs, `2>file`), so logs stay readable.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::files::human_bytes;

#[derive(Clone, Copy)]
pub enum Unit {
    Bytes,
    Elements,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    unit: Unit,
    started: Instant,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64, unit: Unit) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let counts = match unit {
                Unit::Bytes => {
                    "{decimal_bytes}/{decimal_total_bytes} ({decimal_bytes_per_sec}, {eta})"
                }
                Unit::Elements => "{human_pos}/{human_len} ({per_sec}, {eta})",
            };
            let template = format!("{{msg:<40}} [{{bar:30}}] {counts}");
            let style = ProgressStyle::with_template(&template)
                .expect("the progress template is valid")
                .progress_chars("=> ");
            ProgressBar::new(total)
                .with_style(style)
                .with_message(label.clone())
        });
        Progress {
            bar,
            label,
            total,
            unit,
            started: Instant::now(),
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(self) {
        let seconds = self.started.elapsed().as_secs_f64();
        let amount = match self.unit {
            Unit::Bytes => human_bytes(self.total),
            Unit::Elements => format!("{:.1} M values", self.total as f64 / 1e6),
        };
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("  {}: {amount} in {seconds:.1} s", self.label);
    }
}
