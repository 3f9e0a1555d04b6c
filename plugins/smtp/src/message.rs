//! The mail for one event: RFC 5322 headers (Date, Message-ID, From, To,
//! Subject, plus Auto-Submitted from RFC 3834) and a plain-text body with
//! every field of the event.

use std::time::{SystemTime, UNIX_EPOCH};

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};
use offsite_sdk::{Error, Event, EventKind};

use crate::config::Config;

/// `[offsite] calls: backup failed on db1`.
pub fn subject(prefix: &str, e: &Event) -> String {
    let what = match e.kind {
        EventKind::Success => "backup succeeded".to_string(),
        EventKind::Failure => "backup failed".to_string(),
        EventKind::VerifyFailed => "verification failed".to_string(),
        EventKind::UploadFailed => match &e.destination {
            Some(d) => format!("upload to {d} failed"),
            None => "upload failed".to_string(),
        },
        EventKind::NotEnabled => "backups are not enabled".to_string(),
    };
    let line = format!("{}: {what} on {}", e.job, e.host);
    let line = one_line(&line);
    if prefix.is_empty() {
        line
    } else {
        format!("{prefix} {line}")
    }
}

/// A header value must stay on one line whatever a job or host name holds.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Every field of the event, one per line, the detail last (it may span lines).
pub fn body(e: &Event) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let size = e.size.map(|n| format!("{n} bytes{}", human(n)));
    let mut text = format!(
        "{summary}\n\n\
         kind:        {kind}\n\
         job:         {job}\n\
         host:        {host}\n\
         time:        {time}\n\
         summary:     {summary}\n\
         generation:  {generation}\n\
         size:        {size}\n\
         duration_ms: {duration}\n\
         destination: {destination}\n\n\
         detail:\n{detail}\n",
        summary = one_line(&e.summary),
        kind = e.kind.as_str(),
        job = e.job,
        host = e.host,
        time = e.time,
        generation = or_dash(e.generation.clone()),
        size = or_dash(size),
        duration = or_dash(e.duration_ms.map(|d| d.to_string())),
        destination = or_dash(e.destination.clone()),
        detail = if e.detail.is_empty() {
            "-"
        } else {
            e.detail.as_str()
        },
    );
    text.push_str(&format!(
        "\n-- \nsent by the offsite smtp notifier {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    text
}

/// ` (1.5 MiB)` for sizes worth a unit.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = None;
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(u);
    }
    unit.map(|u| format!(" ({v:.1} {u})")).unwrap_or_default()
}

/// `<time.random@domain>` (RFC 5322 §3.6.4): unique per message, with the
/// sender's domain on the right as the RFC suggests.
fn message_id(from: &Mailbox) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let random: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(16)
        .collect();
    format!("<{millis}.{random}.offsite@{}>", from.email.domain())
}

pub fn build(c: &Config, e: &Event) -> Result<Message, Error> {
    let mut b = Message::builder()
        .from(c.from.clone())
        .subject(subject(&c.subject_prefix, e))
        .date_now()
        .message_id(Some(message_id(&c.from)))
        // RFC 3834 §5: machine-made mail; auto-responders must not answer.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    for to in &c.to {
        b = b.to(to.clone());
    }
    // `SinglePart::plain` picks 7bit, quoted-printable or base64 so the mail
    // never needs 8BITMIME, and keeps lines within RFC 5322's 998 octets.
    b.singlepart(SinglePart::plain(body(e)))
        .map_err(|err| Error::Other(format!("cannot build the mail: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use offsite_sdk::Settings;

    fn event() -> Event {
        Event {
            kind: EventKind::Failure,
            job: "calls".into(),
            host: "host-x".into(),
            time: "2026-11-22T04:30:00Z".into(),
            summary: "backup of job calls failed".into(),
            detail: "pg_dump: connection refused\n.\n..dots".into(),
            generation: Some("calls-20261122T043000Z.sql.zst".into()),
            size: Some(1572864),
            duration_ms: Some(4567),
            destination: None,
        }
    }

    #[test]
    fn subject_names_job_event_and_host() {
        let mut e = event();
        assert_eq!(
            subject("[offsite]", &e),
            "[offsite] calls: backup failed on host-x"
        );
        e.kind = EventKind::UploadFailed;
        e.destination = Some("nas".into());
        e.job = "ca\r\nlls".into();
        assert_eq!(subject("", &e), "ca  lls: upload to nas failed on host-x");
    }

    #[test]
    fn body_has_every_field() {
        let b = body(&event());
        for line in [
            "kind:        failure",
            "job:         calls",
            "host:        host-x",
            "time:        2026-11-22T04:30:00Z",
            "summary:     backup of job calls failed",
            "generation:  calls-20261122T043000Z.sql.zst",
            "size:        1572864 bytes (1.5 MiB)",
            "duration_ms: 4567",
            "destination: -",
            "detail:\npg_dump: connection refused\n.\n..dots\n",
        ] {
            assert!(b.contains(line), "{line:?} missing in {b}");
        }
    }

    #[test]
    fn the_mail_has_rfc_5322_headers() {
        let c = crate::config::Config::from_settings(&Settings::from_pairs(vec![
            ("host".into(), "127.0.0.1".into()),
            ("from".into(), "Backups <backup@example.com>".into()),
            ("to".into(), "a@example.com, b@example.org".into()),
            ("subject_prefix".into(), "[offsite]".into()),
        ]))
        .unwrap();
        let m = String::from_utf8(build(&c, &event()).unwrap().formatted()).unwrap();
        let (head, _) = m.split_once("\r\n\r\n").unwrap();
        for h in [
            "From: Backups <backup@example.com>\r\n",
            "To: a@example.com, b@example.org\r\n",
            "Subject: [offsite] calls: backup failed on host-x\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
        ] {
            assert!(m.contains(h), "{h:?} missing in {head}");
        }
        assert!(head.contains("\r\nDate: "), "{head}");
        assert!(head.contains(".offsite@example.com>"), "{head}");
    }
}
