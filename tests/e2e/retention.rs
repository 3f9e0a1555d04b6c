//! Rotation never loses the last good copy (issue 14) and interrupted runs
//! keep local space bounded (issue 15.4): shell-compat with an `ecopy` that
//! fails or hangs, a generation made with a wrong clock (faketime), a
//! local store that is gone, two jobs whose names share a prefix on one
//! destination, and the temporaries an interrupted upload leaves.
//!
//! Shell-compat tests count only generation files in `ecopy`/`eremove`
//! calls, whether or not manifests also go through the scripts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offsite_tests::jobs::{Setup, tar_generations_in, wait_for};
use offsite_tests::proc::{run, text};
use offsite_tests::sinks::HttpSink;

fn next_second() {
    // Generation names have one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A legacy destination: `ecopy` copies into `remote/` and logs; with the
/// file `full` present it fails as a full disk does; with `hang` present
/// it logs `start NAME` and hangs. `eremove` deletes and logs.
struct Legacy {
    s: Setup,
}

impl Legacy {
    fn new(keep: usize, extra_job: &str) -> Legacy {
        let s = Setup::new(&["offsite_shell_compat", "offsite_webhook"]);
        let (scripts, remote, tree) = (s.dir("scripts"), s.dir("remote"), s.dir("tree"));
        std::fs::write(tree.join("data.txt"), "payload").unwrap();
        let calls = s.root().join("calls.log");
        script(
            &scripts.join("ecopy"),
            &format!(
                "n=$(basename \"$1\")\n\
                 [ -e '{full}' ] && {{ echo \"cp: error writing '$n': No space left on device\" >&2; exit 1; }}\n\
                 if [ -e '{hang}' ]; then echo \"start $n\" >> '{calls}'; exec sleep 600; fi\n\
                 cp \"$1\" '{remote}/' && echo \"ecopy $n\" >> '{calls}'",
                full = s.root().join("full").display(),
                hang = s.root().join("hang").display(),
                remote = remote.display(),
                calls = calls.display(),
            ),
        );
        script(
            &scripts.join("eremove"),
            &format!(
                "rm -f \"{remote}/$(basename \"$1\")\" && echo \"eremove $(basename \"$1\")\" >> '{calls}'",
                remote = remote.display(),
                calls = calls.display(),
            ),
        );
        let l = Legacy { s };
        l.write(keep, extra_job, None);
        l
    }

    fn write(&self, keep: usize, extra_job: &str, hook: Option<&HttpSink>) {
        let notifier = hook
            .map(|h| {
                format!(
                    "[notifiers.ops]\nplugin = \"webhook\"\nurl = \"{}\"\n",
                    h.url("/hook")
                )
            })
            .unwrap_or_default();
        self.s.write_config(&format!(
            r#"
[destinations.legacy]
plugin = "shell-compat"
scripts_dir = "{scripts}"

{notifier}
[jobs.calls]
source = "files"
paths = ["{tree}"]
keep = {keep}
destinations = ["legacy"]
notifiers = [{notifiers}]
{extra_job}
"#,
            scripts = self.s.root().join("scripts").display(),
            tree = self.s.root().join("tree").display(),
            notifiers = if hook.is_some() { "\"ops\"" } else { "" },
        ));
    }

    fn flag(&self, name: &str, on: bool) {
        let p = self.s.root().join(name);
        if on {
            std::fs::write(p, "").unwrap();
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Generation names passed to a script verb, in call order.
    fn calls(&self, verb: &str) -> Vec<String> {
        std::fs::read_to_string(self.s.root().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|x| x.strip_prefix(&format!("{verb} ")))
            .filter(|n| n.ends_with(".tar.zst"))
            .map(str::to_string)
            .collect()
    }

    fn local(&self) -> Vec<String> {
        tar_generations_in(&self.s.job_dir("calls"))
    }

    fn remote(&self) -> Vec<String> {
        tar_generations_in(&self.s.root().join("remote"))
    }

    fn run(&self) -> (bool, String) {
        next_second();
        let (code, out) = self.s.run("calls");
        (code == 0, out)
    }
}

/// Issue 14 case 1: a destination whose `ecopy` fails keeps the copies it
/// has, the generation that never reached it is held locally (not dropped
/// with an INFO line), and only the operator's limit (`max_local`) forces
/// it out — with an error and a notice.
#[test]
fn a_failing_destination_keeps_its_copies_and_a_missing_generation_is_held() {
    let hook = HttpSink::start();
    let l = Legacy::new(2, "");
    l.write(2, "", Some(&hook));
    for _ in 0..2 {
        let (ok, out) = l.run();
        assert!(ok, "{out}");
    }
    let first_two = l.remote();
    assert_eq!(first_two.len(), 2, "{first_two:?}");

    l.flag("full", true);
    let mut made = vec![];
    for i in 3..=5 {
        let (ok, out) = l.run();
        assert!(!ok, "run {i} must fail: {out}");
        assert!(out.contains("No space left on device"), "{out}");
        made = l.local();
    }
    let v3 = made[0].clone();
    assert_eq!(made.len(), 3, "v3..v5 stay local: {made:?}");
    assert_eq!(
        l.remote(),
        first_two,
        "the failing destination keeps both copies it had"
    );
    assert!(l.calls("eremove").is_empty(), "{:?}", l.calls("eremove"));
    let log = l.s.log();
    assert!(
        !log.contains(&format!("dropped generation {v3}")),
        "v3 never reached legacy and must not be dropped:\n{log}"
    );
    let (_, list) = l.s.offsite(&["list", "calls"]);
    let v3_block: String = list
        .lines()
        .skip_while(|x| !x.contains(&v3))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(v3_block.contains("legacy:PENDING"), "{list}");
    assert!(v3_block.contains("HELD"), "{list}");
    let json = l.s.list_json("calls");
    let g = json[0]["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == v3.as_str())
        .unwrap()
        .clone();
    assert_eq!(g["local"]["rotation"], "HELD", "{g}");
    assert!(
        g["local"]["why"].as_str().unwrap().contains("legacy"),
        "{g}"
    );
    assert_eq!(
        json[0]["remote_only"].as_array().unwrap().len(),
        2,
        "{json}"
    );

    // max_local = 2 × keep = 4 good generations: the sixth run still fits,
    // the seventh forces the oldest held one (v3) out.
    let (ok, out) = l.run();
    assert!(!ok, "{out}");
    assert_eq!(l.local().len(), 4, "{:?}", l.local());
    let notices_before = hook.requests().len();
    let (ok, out) = l.run();
    assert!(!ok, "{out}");
    assert!(!l.local().contains(&v3), "{:?}", l.local());
    assert_eq!(l.local().len(), 4, "{:?}", l.local());
    let log = l.s.log();
    let line = log
        .lines()
        .find(|x| x.contains(&format!("dropped generation {v3}")))
        .unwrap_or_else(|| panic!("no drop line for {v3}:\n{log}"));
    assert!(line.contains("ERROR"), "a forced drop is an error: {line}");
    assert!(line.contains("max_local = 4"), "{line}");
    let notices: Vec<String> = hook.requests()[notices_before..]
        .iter()
        .map(|r| r.json().to_string())
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("max_local") && n.contains(&v3)),
        "the forced drop is in the notice: {notices:?}"
    );
    assert_eq!(l.remote(), first_two, "still both old copies");

    // The destination recovers: the newest goes first, then the one
    // before it; older pending ones are superseded, and only now do the
    // two old copies leave the destination.
    l.flag("full", false);
    let (ok, out) = l.run();
    assert!(ok, "{out}");
    let newest = l.local();
    assert_eq!(newest.len(), 2, "{newest:?}");
    let shipped = l.calls("ecopy");
    assert_eq!(
        shipped[2..],
        [newest[1].clone(), newest[0].clone()],
        "newest first, then the next; superseded ones not at all: {shipped:?}"
    );
    assert_eq!(l.remote(), newest);
    assert_eq!(l.calls("eremove"), first_two);
}

/// Issue 15.4: runs cut short while uploading never let local space grow
/// past `max_local` (+ keep bad ones), and once the destination answers,
/// the newest generation reaches it first and superseded ones never go.
#[test]
fn thirty_interrupted_runs_stay_bounded_and_the_newest_ships_first() {
    let keep = 3;
    let l = Legacy::new(keep, "max_local = 6");
    l.flag("hang", true);
    let mut peak = 0;
    for i in 0..30 {
        next_second();
        let calls_before = std::fs::read_to_string(l.s.root().join("calls.log"))
            .unwrap_or_default()
            .len();
        let running = l.s.spawn_run("calls");
        let calls = l.s.root().join("calls.log");
        wait_for(
            &format!("run {i} to reach ecopy"),
            Duration::from_secs(60),
            || {
                let t = std::fs::read_to_string(&calls).unwrap_or_default();
                (t.len() > calls_before).then_some(())
            },
        );
        // The upload under way is always of the newest generation.
        let started = l.calls("start");
        let local = l.local();
        assert_eq!(
            started.last(),
            local.last(),
            "run {i} uploads the newest first"
        );
        running.kill();
        peak = peak.max(local.len());
    }
    assert!(
        peak <= 7,
        "local generations stay within max_local = 6, plus the one a run is shipping (peak {peak})"
    );
    let before = l.local();
    l.flag("hang", false);
    // This run may still have to drop one unshipped generation for the
    // limit before it ships (an error), but then ships the newest first.
    let (_, out) = l.run();
    assert!(!out.contains("PANIC") && !out.contains("panicked"), "{out}");
    let after = l.local();
    let shipped = l.calls("ecopy");
    assert_eq!(shipped.len(), keep, "only the newest {keep}: {shipped:?}");
    assert_eq!(shipped[0], *after.last().unwrap(), "the newest first");
    assert_eq!(after.len(), keep, "{after:?} (before: {before:?})");
    assert_eq!(l.remote(), after);
}

/// Issue 14 case 2: a run made with the clock 17 years ahead (faketime)
/// is flagged in `run`, `list` and the log, never counts as the newest,
/// never pushes real generations out, and `restore` says what it picked.
#[test]
fn a_generation_from_a_wrong_clock_is_flagged_and_never_counted() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("tree");
    std::fs::write(tree.join("a.txt"), "alpha").unwrap();
    s.write_config(&format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n\n\
         [jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\nkeep = 2\ndestinations = [\"nas\"]\n",
        s.dir("nas").display(),
        tree.display()
    ));
    for _ in 0..2 {
        next_second();
        s.run_ok("app");
    }
    let o = run(s
        .command(&["run", "app"])
        .env_remove("FAKETIME")
        .env("TZ", "UTC")
        .env("FAKETIME_DONT_RESET", "1")
        .env("FAKETIME_NO_CACHE", "1")
        .env("LD_PRELOAD", faketime_lib())
        .env("FAKETIME", "+17y"));
    assert!(o.status.success(), "{}", text(&o));
    let local = tar_generations_in(&s.job_dir("app"));
    let future = local.last().unwrap().clone();
    assert!(future.starts_with("app-204"), "{local:?}");
    for i in 0..2 {
        next_second();
        let out = s.run_ok("app");
        if i == 1 {
            assert!(
                out.contains(&format!("generation {future} is stamped 204")),
                "run flags it: {out}"
            );
        }
    }
    let local = tar_generations_in(&s.job_dir("app"));
    assert_eq!(
        local.len(),
        3,
        "two real ones and the flagged one: {local:?}"
    );
    assert_eq!(local[2], future);
    let newest_real = local[1].clone();
    assert!(s.log().contains("in the future of now"), "{}", s.log());
    let (_, list) = s.offsite(&["list", "app"]);
    let line = list.lines().find(|x| x.contains(&future)).unwrap();
    assert!(line.contains("FUTURE-STAMPED"), "{list}");
    let json = s.list_json("app");
    let flagged: Vec<&serde_json::Value> = json[0]["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["future"] == true)
        .collect();
    assert_eq!(flagged.len(), 1, "{json}");
    // At the destination too: the two real ones stay, the flagged one too.
    assert_eq!(tar_generations_in(&s.root().join("nas")), local);

    let out_file = s.root().join("restored.tar");
    let (code, out) = s.offsite(&["restore", "app", "--output", out_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("latest is {newest_real}")) && out.contains(&future),
        "restore says what it picked and what it skipped: {out}"
    );
    assert!(out.contains(&format!("restored {newest_real}")), "{out}");
}

fn faketime_lib() -> PathBuf {
    for p in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("libfaketime is missing: tests/install/tools.sh installs the faketime package");
}

/// Two jobs, `shop` and `shop-staging`, on one destination: rotation,
/// `list` and `restore --from` of one never see or touch the other's
/// generations; and with the local store gone, `list` and
/// `verify --remote` work from the destination alone (issue 14 case 7).
#[test]
fn prefix_named_jobs_share_a_destination_and_the_local_store_can_be_gone() {
    let s = Setup::new(&["offsite_local_dir"]);
    let nas = s.dir("nas");
    let (t1, t2) = (s.dir("t1"), s.dir("t2"));
    std::fs::write(t1.join("a.txt"), "shop").unwrap();
    std::fs::write(t2.join("a.txt"), "staging").unwrap();
    s.write_config(&format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{nas}\"\n\n\
         [jobs.shop]\nsource = \"files\"\npaths = [\"{t1}\"]\nkeep = 1\ndestinations = [\"nas\"]\n\n\
         [jobs.shop-staging]\nsource = \"files\"\npaths = [\"{t2}\"]\nkeep = 3\ndestinations = [\"nas\"]\n",
        nas = nas.display(),
        t1 = t1.display(),
        t2 = t2.display()
    ));
    for _ in 0..3 {
        next_second();
        s.run_ok("shop-staging");
    }
    for _ in 0..3 {
        next_second();
        s.run_ok("shop");
    }
    let at_nas = tar_generations_in(&nas);
    let staging: Vec<&String> = at_nas
        .iter()
        .filter(|n| n.starts_with("shop-staging-"))
        .collect();
    let shop: Vec<&String> = at_nas
        .iter()
        .filter(|n| !n.starts_with("shop-staging-"))
        .collect();
    assert_eq!(
        staging.len(),
        3,
        "shop's rotation left staging alone: {at_nas:?}"
    );
    assert_eq!(shop.len(), 1, "{at_nas:?}");
    assert_eq!(*shop[0], tar_generations_in(&s.job_dir("shop"))[0]);

    // A partial upload of shop's, one of staging's, and a stranger's.
    let ours = ".offsite-part-shop-20260101T000000Z.tar.zst".to_string();
    let theirs = ".offsite-part-shop-staging-20260101T000000Z.tar.zst".to_string();
    for n in [&ours, &theirs, &".offsite-part-notes".to_string()] {
        std::fs::write(nas.join(n), "partial").unwrap();
    }
    next_second();
    s.run_ok("shop");
    assert!(!nas.join(&ours).exists(), "shop's own temporary is cleaned");
    assert!(nas.join(&theirs).exists(), "another job's temporary stays");
    assert!(nas.join(".offsite-part-notes").exists());

    // The local disk dies.
    std::fs::remove_dir_all(&s.backup_dir).unwrap();
    let (code, list) = s.offsite(&["list", "shop"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.contains("the local store is empty"), "{list}");
    let shop_now: Vec<String> = tar_generations_in(&nas)
        .into_iter()
        .filter(|n| !n.starts_with("shop-staging-"))
        .collect();
    assert_eq!(shop_now.len(), 1, "{shop_now:?}\n{}", s.log());
    assert!(list.contains(&shop_now[0]), "{list}");
    assert!(!list.contains("shop-staging-"), "{list}");
    let json = s.list_json("shop-staging");
    let listed = json[0]["at_destinations"]["nas"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{json}");
    assert_eq!(json[0]["local_store_empty"], true);

    let (code, out) = s.offsite(&["verify", "shop", "--remote", "nas"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("local store"), "{out}");
    assert!(out.contains(&format!("ok: {}", shop_now[0])), "{out}");

    // Damaged at the destination: the verify fails, for that copy.
    let victim = nas.join(&shop_now[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let (code, out) = s.offsite(&["verify", "shop", "--remote", "nas"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("FAILED"), "{out}");

    // `shop`'s latest at nas is shop's, although `shop-staging-…` sorts
    // after every `shop-2…` name.
    let restored = s.root().join("r.tar");
    let (code, out) = s.offsite(&[
        "restore",
        "shop",
        "--from",
        "nas",
        "--output",
        restored.to_str().unwrap(),
    ]);
    assert!(out.contains("latest at nas is shop-2"), "{out}");
    // (The copy at nas was damaged above: the sha256 check refuses it.)
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("restored shop-staging-"), "{out}");
    let (code, out) = s.offsite(&[
        "restore",
        "shop-staging",
        "--from",
        "nas",
        "--output",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("restored shop-staging-"), "{out}");
}

/// Issue 14 case 3: a database whose dump does not restore (an index on a
/// function that calls another without a schema; pg_dump restores with an
/// empty search_path) fails `verify = "restore"` every run: at most `keep`
/// bad generations stay, oldest dropped first, the good one never, and
/// the verify-failed notice comes every run.
#[test]
fn bad_generations_are_bounded_and_never_push_out_the_good_one() {
    use offsite_tests::postgres::PgCluster;
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE phones");
    pg.psql(
        "phones",
        "CREATE FUNCTION digits_only(t text) RETURNS text LANGUAGE sql IMMUTABLE \
             AS $$ SELECT regexp_replace(t, '[^0-9]', '', 'g') $$;\n\
         CREATE FUNCTION phone_key(t text) RETURNS text LANGUAGE sql IMMUTABLE \
             AS $$ SELECT right(digits_only(t), 9) $$;\n\
         CREATE TABLE contacts(id int PRIMARY KEY, phone text);\n\
         INSERT INTO contacts SELECT i, '+41 (0)44 ' || i FROM generate_series(1, 50) i;",
    );
    let hook = HttpSink::start();
    let s = Setup::new(&["offsite_webhook"]);
    s.write_config(&format!(
        "[notifiers.ops]\nplugin = \"webhook\"\nurl = \"{}\"\n\n\
         [jobs.phones]\nsource = \"postgres\"\ndsn = \"{}\"\nkeep = 2\nverify = \"restore\"\nnotifiers = [\"ops\"]\n",
        hook.url("/hook"),
        pg.dsn("phones")
    ));
    next_second();
    s.run_ok("phones");
    let good = s.manifests("phones")[0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    pg.psql(
        "phones",
        "CREATE INDEX contacts_key ON contacts (phone_key(phone));",
    );
    for i in 1..=5 {
        next_second();
        let (code, out) = s.run("phones");
        assert_ne!(code, 0, "run {i} must fail verification: {out}");
        let ms = s.manifests("phones");
        let bad: Vec<&serde_json::Value> = ms.iter().filter(|m| m["health"] == "bad").collect();
        assert!(bad.len() <= 2, "run {i}: at most keep bad ones: {ms:?}");
        assert_eq!(bad.len(), i.min(2), "run {i}");
        assert!(
            ms.iter().any(|m| m["name"] == good.as_str()),
            "run {i}: the good one stays"
        );
        let verify_failed = hook
            .requests()
            .iter()
            .filter(|r| r.json().to_string().contains("verify-failed"))
            .count();
        assert_eq!(verify_failed, i, "one verify-failed notice every run");
    }
    assert!(
        s.log().contains("digits_only"),
        "the restore error names the function"
    );
}

/// Issue 15.3 (retention part): a run whose new generation is not durable
/// — here the manifest rewrite after verification fails because the job
/// folder was made immutable — drops nothing, locally or remotely.
#[test]
fn a_run_whose_manifest_cannot_be_written_drops_nothing() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("tree");
    std::fs::write(tree.join("a.txt"), "alpha").unwrap();
    let nas = s.dir("nas");
    let hook = s.root().join("lock-folder");
    script(
        &hook,
        "[ -e \"$(dirname \"$OFFSITE_FILE\")/../../freeze\" ] && chattr +i \"$(dirname \"$OFFSITE_FILE\")\"\nexit 0",
    );
    s.write_config(&format!(
        "[destinations.nas]\nplugin = \"local-dir\"\npath = \"{}\"\n\n\
         [jobs.app]\nsource = \"files\"\npaths = [\"{}\"]\nkeep = 1\nverify = \"checksum\"\n\
         destinations = [\"nas\"]\nafter = \"{}\"\n",
        nas.display(),
        tree.display(),
        hook.display()
    ));
    next_second();
    s.run_ok("app");
    let first = tar_generations_in(&s.job_dir("app"));
    assert_eq!(first.len(), 1);

    std::fs::write(s.root().join("freeze"), "").unwrap();
    next_second();
    let (code, out) = s.run("app");
    let unfreeze = std::process::Command::new("chattr")
        .arg("-i")
        .arg(s.job_dir("app"))
        .status()
        .unwrap();
    assert!(unfreeze.success());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("cannot write the manifest"), "{out}");
    let local = tar_generations_in(&s.job_dir("app"));
    assert!(
        local.contains(&first[0]),
        "the good one stays locally: {local:?}"
    );
    assert!(
        tar_generations_in(&nas).contains(&first[0]),
        "and at the destination: {:?}",
        tar_generations_in(&nas)
    );
    assert!(!out.contains("dropped generation"), "{out}");
}
