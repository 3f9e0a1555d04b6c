//! Every step goes to `log_file` (seed 000's /var/log/backup.log) and stderr.

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::ChronoLocal;
use tracing_subscriber::prelude::*;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("OFFSITE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn,tokio_postgres=warn"))
}

/// Log to stderr, and to `file` when given. A log file that cannot be opened
/// is reported on stderr and the run goes on: losing the log must not lose
/// the backup.
pub fn init(file: Option<&Path>) {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_timer(ChronoLocal::new("%H:%M:%S".into()))
        .with_filter(filter());
    let mut problem = None;
    let file_layer = file.and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .with_target(false)
                    .with_timer(ChronoLocal::new("%Y-%m-%d %H:%M:%S%z".into()))
                    .with_filter(filter()),
            ),
            Err(e) => {
                problem = Some(format!(
                    "cannot open log_file {}: {e}; logging to stderr only",
                    path.display()
                ));
                None
            }
        }
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
}
