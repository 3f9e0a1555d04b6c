//! The `webhook` notifier: POSTs each event as one JSON object to an HTTP(S)
//! endpoint, through wasi:http (the runner opens the sandbox to the host and
//! port of the `url` setting and nothing else).
//!
//! # Settings
//!
//! | key | required | default | meaning |
//! | --- | --- | --- | --- |
//! | `url` | yes | | `http://` or `https://` URL to POST to (role http-url) |
//! | `secret_header` | no | | secret; one header sent with every request, `Name: value`, e.g. `Authorization: Bearer <token>` or `X-Token: <token>` |
//! | `timeout` | no | `30` | seconds (`30`, `30s`) or minutes (`2m`) for connecting, for the first response byte and between bytes, per attempt |
//! | `retries` | no | `3` | retries after the first attempt (0–10), on 5xx, 408, 429 and network errors; waits 1 s, 2 s, 4 s, … (≤ 30 s) or the server's `Retry-After` (≤ 60 s) |
//!
//! # Request
//!
//! `POST` to `url` with `Content-Type: application/json`, `Content-Length`,
//! `User-Agent: offsite-webhook/<version>` and the secret header, if any.
//! Redirects are not followed.
//!
//! # Body (JSON schema)
//!
//! One object; every key is always present, optional values are `null`:
//!
//! ```json
//! {
//!   "$schema": "https://json-schema.org/draft/2020-12/schema",
//!   "title": "offsite event (offsite:plugin@0.1.0 event record)",
//!   "type": "object",
//!   "required": ["kind", "job", "host", "time", "summary", "detail",
//!                "generation", "size", "duration_ms", "destination"],
//!   "additionalProperties": false,
//!   "properties": {
//!     "kind": {"enum": ["success", "failure", "verify-failed", "upload-failed", "not-enabled"]},
//!     "job": {"type": "string", "description": "the job's name in the config"},
//!     "host": {"type": "string", "description": "the runner's host name"},
//!     "time": {"type": "string", "format": "date-time", "description": "RFC 3339 UTC time of the event"},
//!     "summary": {"type": "string", "description": "one line, e.g. \"backup of job calls failed\""},
//!     "detail": {"type": "string", "description": "the error text, or details of a success"},
//!     "generation": {"type": ["string", "null"], "description": "generation file name"},
//!     "size": {"type": ["integer", "null"], "minimum": 0, "description": "bytes"},
//!     "duration_ms": {"type": ["integer", "null"], "minimum": 0},
//!     "destination": {"type": ["string", "null"], "description": "destination name, for upload events"}
//!   }
//! }
//! ```
//!
//! # Outcomes
//!
//! 2xx: delivered. 5xx, 408, 429, refused/reset/timed-out connections: retried
//! within `retries`, then `transient`. 401/403: `config` (check
//! `secret_header` and `url`). Other 4xx: `rejected`. 3xx: `config` (point
//! `url` at the final address). A request outside the sandbox: `config`.
//! Messages show only `scheme://host:port` of the URL (hook URLs often hold
//! a token in the path) and never the secret header's value.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod config;
mod payload;
mod policy;
mod post;

use offsite_plugin_core::retry::{Outcome, with_retries};
use offsite_sdk::*;

use crate::config::{Config, DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS, MAX_RETRIES};
use crate::policy::Verdict;

struct Webhook {
    config: Config,
}

impl Webhook {
    fn headers(&self, body_len: usize) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            (
                "content-length".to_string(),
                body_len.to_string().into_bytes(),
            ),
            (
                "user-agent".to_string(),
                format!("offsite-webhook/{}", env!("CARGO_PKG_VERSION")).into_bytes(),
            ),
        ];
        if let Some(s) = &self.config.secret_header {
            h.push((s.name.clone(), s.value.clone().into_bytes()));
        }
        h
    }

    fn attempt(&self, headers: &[(String, Vec<u8>)], body: &[u8]) -> Verdict {
        let origin = self.config.target.origin();
        match post::post(&self.config.target, headers, body, self.config.timeout) {
            Ok(a) => {
                let secret = self.config.secret_header.as_ref().map(|s| s.value.as_str());
                let excerpt = policy::excerpt(&a.body_start, secret);
                policy::from_status(a.status, a.retry_after.as_deref(), &excerpt, &origin)
            }
            Err(code) => post::from_error(&code, &origin),
        }
    }
}

impl Notifier for Webhook {
    fn describe() -> PluginInfo {
        PluginInfo::notifier(
            "webhook",
            env!("CARGO_PKG_VERSION"),
            "POSTs each event as JSON to an HTTP(S) endpoint",
        )
        .setting(
            Setting::new("url", "http:// or https:// URL the JSON event is POSTed to")
                .required()
                .role(SettingRole::HttpUrl),
        )
        .setting(
            Setting::new(
                "secret_header",
                "one header sent with each request, `Name: value`, e.g. `Authorization: Bearer <token>` or `X-Token: <token>`",
            )
            .secret(),
        )
        .setting(
            Setting::new(
                "timeout",
                "per attempt: seconds (30, 30s) or minutes (2m) to connect and between response bytes",
            )
            .default(&DEFAULT_TIMEOUT_SECS.to_string()),
        )
        .setting(
            Setting::new(
                "retries",
                &format!(
                    "retries after the first attempt on 5xx, 408, 429 or a network error (0-{MAX_RETRIES}), with backoff"
                ),
            )
            .default(&DEFAULT_RETRIES.to_string()),
        )
    }

    fn configure(settings: &Settings) -> Result<Self, Error> {
        Ok(Webhook {
            config: Config::from_settings(settings)?,
        })
    }

    fn notify(&mut self, event: &Event) -> Result<(), Error> {
        let body = payload::body(event);
        let headers = self.headers(body.len());
        with_retries(self.config.retries, warn, || {
            match self.attempt(&headers, &body) {
                Verdict::Delivered => Outcome::Done,
                Verdict::Final(e) => Outcome::Final(e),
                Verdict::Retry {
                    message,
                    retry_after,
                } => Outcome::Retry {
                    why: message,
                    after: retry_after,
                },
            }
        })
    }
}

// Native builds are for the unit tests: the export names link only into a
// component.
#[cfg(target_arch = "wasm32")]
export_notifier!(Webhook);
