//! Telling people: every event goes to each of the job's notifiers whose
//! `on` list names it. A notifier that fails is logged; it never changes the
//! outcome of the backup it reports on.

use std::time::Duration;

use crate::config::{Config, Event};
use crate::plugin::{CallContext, NotifierSession, PluginHost, PluginSet, configured, wit};

/// What happened, in the runner's terms.
#[derive(Clone, Debug)]
pub struct Notice {
    pub kind: Event,
    pub job: String,
    pub summary: String,
    pub detail: String,
    pub generation: Option<String>,
    pub size: Option<u64>,
    pub duration: Option<Duration>,
    pub destination: Option<String>,
}

impl Notice {
    pub fn new(
        kind: Event,
        job: &str,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Notice {
            kind,
            job: job.to_string(),
            summary: summary.into(),
            detail: detail.into(),
            generation: None,
            size: None,
            duration: None,
            destination: None,
        }
    }

    pub fn to_wit(&self) -> wit::Event {
        wit::Event {
            kind: match self.kind {
                Event::Success => wit::EventKind::Success,
                Event::Failure => wit::EventKind::Failure,
                Event::VerifyFailed => wit::EventKind::VerifyFailed,
                Event::UploadFailed => wit::EventKind::UploadFailed,
                Event::NotEnabled => wit::EventKind::NotEnabled,
                // The contract (0.1.0 and 0.2.0) has no kind for them: a
                // failure whose summary starts with "archive-lag:" or
                // "wal-lag:".
                Event::ArchiveLag | Event::WalLag => wit::EventKind::Failure,
            },
            job: self.job.clone(),
            host: host_name(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            summary: self.summary.clone(),
            detail: self.detail.clone(),
            generation: self.generation.clone(),
            size: self.size,
            duration_ms: self.duration.map(|d| d.as_millis() as u64),
            destination: self.destination.clone(),
        }
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The event `offsite plugins test` sends to a notifier.
pub fn test_event() -> wit::Event {
    let mut n = Notice::new(
        Event::Success,
        "conformance",
        "offsite test notification",
        "sent by `offsite plugins test`; no backup ran",
    );
    n.generation = Some("conformance-00000000T000000Z.tar.zst".into());
    n.size = Some(0);
    n.duration = Some(Duration::ZERO);
    n.to_wit()
}

/// Send `notice` to every notifier of the job that wants it. Returns how many
/// accepted it; failures are logged, never raised.
pub async fn send(
    host: &PluginHost,
    config: &Config,
    plugins: &PluginSet,
    notifiers: &[String],
    notice: &Notice,
) -> usize {
    let mut delivered = 0;
    let event = notice.to_wit();
    for name in notifiers {
        let Some(n) = config.notifiers.get(name) else {
            continue;
        };
        if !notice.kind.heard_by(&n.on) {
            continue;
        }
        let c = match configured::notifier(config, plugins, name) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("notifier `{name}` unusable: {}", configured::joined(&e));
                continue;
            }
        };
        let ctx = CallContext {
            plugin: c.plugin.info.name.clone(),
            instance: name.clone(),
            job: Some(notice.job.clone()),
        };
        let r = match NotifierSession::open(host, c.plugin.clone(), &c.settings, ctx).await {
            Ok(mut s) => s.notify(&event).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                delivered += 1;
                tracing::info!(
                    "notifier `{name}`: sent {} for job {}",
                    notice.kind.as_str(),
                    notice.job
                );
            }
            Err(e) => tracing::error!(
                "notifier `{name}` could not send {} for job {}: {e}",
                notice.kind.as_str(),
                notice.job
            ),
        }
    }
    delivered
}
