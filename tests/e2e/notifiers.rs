//! The webhook and smtp notifiers against real sinks (tests/harness/sinks.rs):
//! through the library (`NotifierSession::notify`) and through
//! `offsite plugins test FILE.wasm --setting ...`, which sends one test event.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use offsite::plugin::wit::{Event, EventKind, SettingRole};
use offsite::plugin::{
    CallContext, ErrorKind, Limits, LoadedPlugin, NotifierSession, PluginError, PluginHost,
    settings,
};
use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::proc::{free_port, run, text};
use offsite_tests::sinks::{HttpSink, SmtpSink};
use serde_json::json;

fn host() -> PluginHost {
    PluginHost::new(
        None,
        Limits {
            memory_bytes: 128 << 20,
            // Retries with backoff (1 s, 2 s, …) must fit.
            call_timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(120),
            debug_stdio: false,
        },
    )
    .unwrap()
}

async fn load(host: &PluginHost, crate_name: &str) -> Arc<LoadedPlugin> {
    Arc::new(
        host.load_file(&wasm(crate_name))
            .await
            .expect("plugin loads"),
    )
}

fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Configure the plugin with `pairs` and send `event`, as the runner does.
async fn notify_with(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    resolved: &settings::ResolvedSettings,
    event: &Event,
) -> Result<(), PluginError> {
    let ctx = CallContext {
        plugin: plugin.info.name.clone(),
        instance: "ops".into(),
        job: Some(event.job.clone()),
    };
    let mut s = NotifierSession::open(host, plugin.clone(), resolved, ctx).await?;
    s.notify(event).await
}

async fn notify(
    host: &PluginHost,
    plugin: &Arc<LoadedPlugin>,
    pairs: &[(&str, &str)],
    event: &Event,
) -> Result<(), PluginError> {
    let resolved = settings::resolve(&plugin.info, &raw(pairs)).expect("settings resolve");
    notify_with(host, plugin, &resolved, event).await
}

fn full_event(kind: EventKind) -> Event {
    Event {
        kind,
        job: "calls".into(),
        host: "host-x".into(),
        time: "2026-11-22T04:30:00Z".into(),
        summary: "backup of job calls failed".into(),
        detail: "pg_dump: error: connection to server failed\nexit status 1".into(),
        generation: Some("calls-20261122T043000Z.sql.zst".into()),
        size: Some(1_572_864),
        duration_ms: Some(4567),
        destination: Some("nas".into()),
    }
}

fn bare_event() -> Event {
    Event {
        kind: EventKind::NotEnabled,
        job: "app".into(),
        host: "host-y".into(),
        time: "2026-11-23T00:00:00Z".into(),
        summary: "job app is not enabled".into(),
        detail: String::new(),
        generation: None,
        size: None,
        duration_ms: None,
        destination: None,
    }
}

fn err_of(r: Result<(), PluginError>) -> PluginError {
    match r {
        Ok(()) => panic!("expected an error, the notification was delivered"),
        Err(e) => e,
    }
}

/// The error of one `notify` of `event` through a fresh webhook instance
/// with `pairs` (fails the test if it was delivered).
async fn webhook_err(pairs: &[(&str, &str)], event: &Event) -> PluginError {
    let host = host();
    let p = load(&host, "offsite_webhook").await;
    err_of(notify(&host, &p, pairs, event).await)
}

/// `offsite plugins test FILE --setting k=v ...` (one test event, job `conformance`).
fn plugins_test(crate_name: &str, settings: &[String]) -> (bool, String) {
    let mut cmd = Command::new(offsite_bin());
    cmd.args(["plugins", "test"]).arg(wasm(crate_name));
    for s in settings {
        cmd.args(["--setting", s]);
    }
    let o = run(cmd.env("OFFSITE_CONFIG", "/nonexistent/offsite.toml"));
    (o.status.success(), text(&o))
}

// ---------------------------------------------------------------- webhook

const SECRET: &str = "Bearer t0ken-s3cret-42";

#[tokio::test]
async fn webhook_posts_every_event_field_as_json_with_the_secret_header() {
    let sink = HttpSink::start();
    let host = host();
    let p = load(&host, "offsite_webhook").await;
    let url = sink.url("/hooks/offsite?team=ops");
    let header = format!("Authorization: {SECRET}");
    let pairs = [("url", url.as_str()), ("secret_header", header.as_str())];

    notify(&host, &p, &pairs, &full_event(EventKind::Failure))
        .await
        .unwrap();
    notify(&host, &p, &pairs, &bare_event()).await.unwrap();

    let got = sink.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/offsite?team=ops");
    assert_eq!(r.header("authorization"), Some(SECRET));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("user-agent")
            .is_some_and(|u| u.starts_with("offsite-webhook/")),
        "{r:?}"
    );
    assert_eq!(
        r.json(),
        json!({
            "kind": "failure",
            "job": "calls",
            "host": "host-x",
            "time": "2026-11-22T04:30:00Z",
            "summary": "backup of job calls failed",
            "detail": "pg_dump: error: connection to server failed\nexit status 1",
            "generation": "calls-20261122T043000Z.sql.zst",
            "size": 1572864,
            "duration_ms": 4567,
            "destination": "nas",
        })
    );
    assert_eq!(
        got[1].json(),
        json!({
            "kind": "not-enabled",
            "job": "app",
            "host": "host-y",
            "time": "2026-11-23T00:00:00Z",
            "summary": "job app is not enabled",
            "detail": "",
            "generation": null,
            "size": null,
            "duration_ms": null,
            "destination": null,
        })
    );
}

#[tokio::test]
async fn webhook_spells_every_event_kind_in_kebab_case() {
    let sink = HttpSink::start();
    let host = host();
    let p = load(&host, "offsite_webhook").await;
    let url = sink.url("/");
    let kinds = [
        (EventKind::Success, "success"),
        (EventKind::Failure, "failure"),
        (EventKind::VerifyFailed, "verify-failed"),
        (EventKind::UploadFailed, "upload-failed"),
        (EventKind::NotEnabled, "not-enabled"),
    ];
    for (kind, _) in &kinds {
        notify(&host, &p, &[("url", &url)], &full_event(*kind))
            .await
            .unwrap();
    }
    let seen: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<&str> = kinds.iter().map(|(_, s)| *s).collect();
    assert_eq!(seen, want);
    assert!(sink.requests()[0].header("authorization").is_none());
}

#[tokio::test]
async fn webhook_retries_a_503_twice_then_delivers() {
    let sink = HttpSink::answering(&[503, 503, 200]);
    let host = host();
    let p = load(&host, "offsite_webhook").await;
    let url = sink.url("/hook");
    notify(&host, &p, &[("url", &url)], &full_event(EventKind::Success))
        .await
        .expect("delivered on the third attempt");
    let got = sink.requests();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert!(got.iter().all(|r| r.body == got[0].body));
}

#[tokio::test]
async fn webhook_gives_up_on_5xx_after_its_retries_as_transient() {
    let sink = HttpSink::answering(&[500]);
    let url = sink.url("/hook");
    let e = webhook_err(
        &[("url", &url), ("retries", "1")],
        &full_event(EventKind::Failure),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("500 Internal Server Error"), "{e}");
    assert!(e.message.contains("gave up after 2 attempts"), "{e}");
    assert_eq!(sink.requests().len(), 2);
}

#[tokio::test]
async fn webhook_400_is_rejected_at_once_with_the_servers_words() {
    let sink = HttpSink::answering(&[400]);
    let url = sink.url("/hook");
    let e = webhook_err(&[("url", &url)], &full_event(EventKind::Failure)).await;
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert!(e.message.contains("400 Bad Request"), "{e}");
    assert!(e.message.contains("sink answered 400"), "{e}");
    assert_eq!(sink.requests().len(), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn webhook_401_is_a_config_error_naming_secret_header_without_the_secret() {
    let sink = HttpSink::answering(&[401]);
    let url = sink.url("/hook");
    let header = format!("X-Token: {SECRET}");
    let e = webhook_err(
        &[("url", &url), ("secret_header", &header)],
        &full_event(EventKind::Failure),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("`secret_header`"), "{e}");
    assert!(!e.message.contains("t0ken-s3cret"), "{e}");
    assert_eq!(sink.requests()[0].header("x-token"), Some(SECRET));
}

#[tokio::test]
async fn webhook_to_a_sink_that_is_down_is_transient_after_retries() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let e = webhook_err(
        &[("url", &url), ("retries", "1")],
        &full_event(EventKind::Failure),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.message.contains(&format!("http://127.0.0.1:{port}")),
        "{e}"
    );
    assert!(e.message.contains("gave up after 2 attempts"), "{e}");
}

#[tokio::test]
async fn webhook_bad_settings_are_config_errors_naming_the_setting() {
    let e = webhook_err(
        &[
            ("url", "http://127.0.0.1:9/hook"),
            ("secret_header", "Bearer s3cret-only"),
        ],
        &bare_event(),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("`secret_header`"), "{e}");
    assert!(!e.message.contains("s3cret-only"), "{e}");
}

/// The webhook only reaches the authority the sandbox granted: here the
/// grant goes to another setting's URL (the plugin's own `url` is resolved
/// as a plain value), so the request to `url` must be refused by the host,
/// never reach the sink, and come back as `config` naming `url`.
#[tokio::test]
async fn a_url_authority_the_sandbox_did_not_grant_is_refused() {
    let sink = HttpSink::start();
    let elsewhere = HttpSink::start();
    let host = host();
    let p = load(&host, "offsite_webhook").await;
    let mut info = p.info.clone();
    for s in info.settings.iter_mut().filter(|s| s.key == "url") {
        s.role = SettingRole::Plain;
    }
    let mut granted = info.settings[0].clone();
    granted.key = "granted_url".into();
    granted.required = false;
    granted.role = SettingRole::HttpUrl;
    info.settings.push(granted);
    let url = sink.url("/hook");
    let other = elsewhere.url("/");
    let resolved =
        settings::resolve(&info, &raw(&[("url", &url), ("granted_url", &other)])).unwrap();
    let e = err_of(notify_with(&host, &p, &resolved, &full_event(EventKind::Failure)).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("sandbox refused"), "{e}");
    assert!(e.message.contains("`url`"), "{e}");
    assert!(
        sink.requests().is_empty(),
        "the refused request reached the sink"
    );
    assert!(elsewhere.requests().is_empty());

    // Control: the same plugin with `url` granted delivers.
    notify(&host, &p, &[("url", &url)], &full_event(EventKind::Failure))
        .await
        .unwrap();
    assert_eq!(sink.requests().len(), 1);
}

#[test]
fn plugins_test_sends_one_event_to_the_webhook_sink() {
    let sink = HttpSink::start();
    let (ok, out) = plugins_test(
        "offsite_webhook",
        &[
            format!("url={}", sink.url("/t")),
            format!("secret_header=X-Token: {SECRET}"),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("notify   ok"), "{out}");
    assert!(!out.contains("t0ken-s3cret"), "{out}");
    let got = sink.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].header("x-token"), Some(SECRET));
    let body = got[0].json();
    assert_eq!(body["job"], "conformance");
    assert_eq!(body["kind"], "success");
    assert_eq!(body.as_object().unwrap().len(), 10, "{body}");
}

// ------------------------------------------------------------------- smtp

/// The header block and body of a mail file.
fn split_mail(mail: &str) -> (&str, &str) {
    mail.split_once("\n\n")
        .expect("a mail has headers and a body")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

fn smtp_pairs(port: &str) -> Vec<(&str, &str)> {
    vec![
        ("host", "127.0.0.1"),
        ("port", port),
        ("from", "Backups <backup@example.com>"),
        ("to", "ops@example.com, Dana <dana@example.org>"),
    ]
}

#[tokio::test]
async fn smtp_mails_the_event_with_the_job_in_the_subject() {
    let sink = SmtpSink::plain();
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let port = sink.port.to_string();
    let mut event = full_event(EventKind::Failure);
    // Lines that end the DATA phase or lose a dot unless dot-stuffed
    // (RFC 5321 §4.5.2).
    event.detail = "first line\n.\n.hidden\n..two dots\nlast line".into();
    notify(&host, &p, &smtp_pairs(&port), &event).await.unwrap();

    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (head, body) = split_mail(&mails[0]);
    assert_eq!(
        header(head, "Subject"),
        Some("[offsite] calls: backup failed on host-x")
    );
    assert_eq!(header(head, "From"), Some("Backups <backup@example.com>"));
    assert_eq!(
        header(head, "To"),
        Some("ops@example.com, Dana <dana@example.org>")
    );
    assert_eq!(
        header(head, "X-RcptTo"),
        Some("ops@example.com, dana@example.org")
    );
    assert_eq!(header(head, "X-MailFrom"), Some("backup@example.com"));
    assert!(
        header(head, "Date").is_some_and(|d| d.ends_with("+0000")),
        "{head}"
    );
    assert!(
        header(head, "Message-ID").is_some_and(|m| m.ends_with("@example.com>")),
        "{head}"
    );
    assert_eq!(header(head, "Auto-Submitted"), Some("auto-generated"));
    for line in [
        "kind:        failure",
        "job:         calls",
        "host:        host-x",
        "time:        2026-11-22T04:30:00Z",
        "summary:     backup of job calls failed",
        "generation:  calls-20261122T043000Z.sql.zst",
        "size:        1572864 bytes (1.5 MiB)",
        "duration_ms: 4567",
        "destination: nas",
    ] {
        assert!(body.contains(line), "{line:?} missing in:\n{body}");
    }
    assert!(
        body.contains("detail:\nfirst line\n.\n.hidden\n..two dots\nlast line\n"),
        "dot lines changed:\n{body}"
    );
}

#[tokio::test]
async fn smtp_starttls_with_the_servers_own_certificate_pinned() {
    let sink = SmtpSink::starttls();
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let port = sink.port.to_string();
    let pem = sink.cert_pem.clone().unwrap();
    let mut pairs = smtp_pairs(&port);
    pairs.push(("tls_ca", &pem));
    pairs.push(("starttls", "always"));
    notify(&host, &p, &pairs, &full_event(EventKind::VerifyFailed))
        .await
        .unwrap();
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        header(split_mail(&mails[0]).0, "Subject"),
        Some("[offsite] calls: verification failed on host-x")
    );

    // Without tls_ca the self-signed certificate is not trusted.
    let e = err_of(notify(&host, &p, &smtp_pairs(&port), &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("`tls_ca`"), "{e}");

    // tls_insecure encrypts without checking.
    let mut insecure = smtp_pairs(&port);
    insecure.push(("tls_insecure", "true"));
    notify(&host, &p, &insecure, &bare_event()).await.unwrap();

    // The server insists on STARTTLS: `never` is refused with a hint.
    let mut never = smtp_pairs(&port);
    never.push(("starttls", "never"));
    let e = err_of(notify(&host, &p, &never, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("`starttls`"), "{e}");
    assert_eq!(sink.mails().len(), 2);
}

#[tokio::test]
async fn smtp_always_refuses_a_server_without_starttls() {
    let sink = SmtpSink::plain();
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let port = sink.port.to_string();
    let mut pairs = smtp_pairs(&port);
    pairs.push(("starttls", "always"));
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("does not offer STARTTLS"), "{e}");
    assert!(sink.mails().is_empty());
}

const PASSWORD: &str = "corr3ct-h0rse-battery";

#[tokio::test]
async fn smtp_auth_plain_and_login_after_starttls() {
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    for mechanism in ["PLAIN", "LOGIN"] {
        let sink = SmtpSink::with_auth("backup", PASSWORD, &[mechanism]);
        let port = sink.port.to_string();
        let pem = sink.cert_pem.clone().unwrap();
        let mut pairs = smtp_pairs(&port);
        pairs.extend([
            ("tls_ca", pem.as_str()),
            ("user", "backup"),
            ("password", PASSWORD),
        ]);
        notify(&host, &p, &pairs, &full_event(EventKind::UploadFailed))
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(
            sink.auth_attempts(),
            vec![json!({"mechanism": mechanism, "login": "backup", "success": true})]
        );
        let mails = sink.mails();
        assert_eq!(mails.len(), 1, "{mechanism}");
        assert_eq!(
            header(split_mail(&mails[0]).0, "Subject"),
            Some("[offsite] calls: upload to nas failed on host-x")
        );
    }
}

#[tokio::test]
async fn smtp_wrong_password_is_a_config_error_without_the_password() {
    let sink = SmtpSink::with_auth("backup", PASSWORD, &[]);
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let port = sink.port.to_string();
    let pem = sink.cert_pem.clone().unwrap();
    let mut pairs = smtp_pairs(&port);
    pairs.extend([
        ("tls_ca", pem.as_str()),
        ("user", "backup"),
        ("password", "wr0ng-passw0rd"),
    ]);
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("535"), "{e}");
    assert!(e.message.contains("`user` and `password`"), "{e}");
    assert!(!e.message.contains("wr0ng-passw0rd"), "{e}");
    assert_eq!(sink.auth_attempts().len(), 1, "AUTH is not retried");
    assert!(sink.mails().is_empty());

    // A server that offers AUTH only after STARTTLS, with `starttls` = never.
    let mut never = smtp_pairs(&port);
    never.extend([
        ("user", "backup"),
        ("password", PASSWORD),
        ("starttls", "never"),
    ]);
    let e = err_of(notify(&host, &p, &never, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("AUTH only after STARTTLS"), "{e}");
    assert!(!e.message.contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn smtp_permanent_refusal_is_rejected() {
    // 552 (RFC 5321 §4.2.3) for a message over the server's size limit.
    let sink = SmtpSink::with_size_limit(200);
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let port = sink.port.to_string();
    let e = err_of(
        notify(
            &host,
            &p,
            &smtp_pairs(&port),
            &full_event(EventKind::Failure),
        )
        .await,
    );
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert!(e.message.contains("552"), "{e}");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn smtp_to_a_server_that_is_down_is_transient_after_retries() {
    let port = free_port().to_string();
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let mut pairs = smtp_pairs(&port);
    pairs.push(("retries", "1"));
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.message.contains("gave up after 2 attempts"), "{e}");
}

/// A wrong port whose server waits for the client to speak (here the HTTP
/// sink) must not hang the notifier: the greeting has the `timeout` limit.
#[tokio::test]
async fn smtp_a_server_that_never_greets_is_transient_after_the_timeout() {
    let http = HttpSink::start();
    let port = http.port.to_string();
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let mut pairs = smtp_pairs(&port);
    pairs.extend([("timeout", "1"), ("retries", "0")]);
    // A hang would end at the host's call limit as `timeout`, not `transient`.
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("waiting for the greeting"), "{e}");
    assert!(e.message.contains("`timeout`"), "{e}");
}

#[tokio::test]
async fn smtp_bad_settings_are_config_errors_naming_the_setting() {
    let host = host();
    let p = load(&host, "offsite_smtp").await;
    let mut pairs = smtp_pairs("25");
    pairs.retain(|(k, _)| *k != "to");
    pairs.push(("to", "ops@example.com, not an address"));
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("setting `to`"), "{e}");

    let mut pairs = smtp_pairs("25");
    pairs.push(("password", PASSWORD));
    let e = err_of(notify(&host, &p, &pairs, &bare_event()).await);
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("`user`"), "{e}");
    assert!(!e.message.contains(PASSWORD), "{e}");
}

#[test]
fn plugins_test_sends_one_mail_to_the_smtp_sink() {
    let sink = SmtpSink::with_auth("backup", PASSWORD, &[]);
    let pem = sink.cert_pem.clone().unwrap();
    let (ok, out) = plugins_test(
        "offsite_smtp",
        &[
            "host=127.0.0.1".into(),
            format!("port={}", sink.port),
            "from=backup@example.com".into(),
            "to=ops@example.com".into(),
            "user=backup".into(),
            format!("password={PASSWORD}"),
            format!("tls_ca={pem}"),
            "subject_prefix=[db1 backups]".into(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("notify   ok"), "{out}");
    assert!(!out.contains(PASSWORD), "{out}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let subject = header(split_mail(&mails[0]).0, "Subject")
        .unwrap()
        .to_string();
    assert!(
        subject.starts_with("[db1 backups] conformance: backup succeeded on "),
        "{subject}"
    );
}
