//! Whole files through [`Config::parse`]: what each source kind accepts, the
//! typed values a job gets, and the exact texts of refusals.

use super::*;
use crate::pipeline::Compression;
use crate::source::postgres::PgFormat;
use std::time::Duration;

const PATH: &str = "/etc/offsite/offsite.toml";

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new(PATH), text).map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

const DESTS: &str = "[destinations.nas]\nplugin = \"local-dir\"\npath = \"/mnt\"\n";

#[test]
fn a_postgres_job_is_typed_at_load() {
    let c = parse(
        "[jobs.db]\nsource = \"postgres\"\ndsn = \"postgresql://app:pw@127.0.0.1:5432/calls\"\nformat = \"directory\"\njobs = 4\npaths = [\"/etc/app\"]\n",
    )
    .unwrap();
    let j = &c.jobs["db"];
    let JobSource::Postgres { db, paths } = &j.source else {
        panic!("{:?}", j.source)
    };
    assert_eq!(db.format, PgFormat::Directory);
    assert_eq!(db.jobs, 4);
    assert_eq!(db.dsn.expose(), "postgresql://app:pw@127.0.0.1:5432/calls");
    assert_eq!(paths, &[PathBuf::from("/etc/app")]);
    assert_eq!(j.source.kind(), "postgres");
    assert!(matches!(j.compression, Compression::Zstd { level: 3, .. }));
    // No password in a debug print of the whole config.
    assert!(!format!("{c:?}").contains(":pw@"), "{c:?}");
}

#[test]
fn a_files_job_has_paths_and_no_database() {
    let c = parse("[jobs.www]\nsource = \"files\"\npaths = [\"/srv/www\"]\n").unwrap();
    let j = &c.jobs["www"];
    assert!(j.source.postgres().is_none());
    assert_eq!(j.source.format(), None);
    assert_eq!(j.source.paths(), &[PathBuf::from("/srv/www")]);
    assert_eq!(j.source.kind(), "files");
}

#[test]
fn keys_of_the_other_source_are_refused() {
    let e = err(
        "[jobs.www]\nsource = \"files\"\npaths = [\"/srv\"]\ndsn = \"host=h\"\nformat = \"tar\"\n",
    );
    assert!(
        e.contains(":4: `jobs.www.dsn`: only used with source = \"postgres\""),
        "{e}"
    );
    assert!(
        e.contains(":5: `jobs.www.format`: only used with source = \"postgres\""),
        "{e}"
    );
    let e = err("[jobs.db]\nsource = \"postgres\"\n");
    assert!(
        e.contains("`jobs.db.dsn`: required with source = \"postgres\""),
        "{e}"
    );
    let e = err("[jobs.www]\nsource = \"files\"\n");
    assert!(
        e.contains("`jobs.www.paths`: required with source = \"files\""),
        "{e}"
    );
    let e = err("[jobs.www]\nsource = \"files\"\npaths = [\"srv\"]\n");
    assert!(e.contains("srv must be an absolute path"), "{e}");
    for source in ["files", "archive"] {
        let e = err(&format!(
            "[jobs.rec]\nsource = \"{source}\"\npaths = [\"/srv/calls/../calls\"]\n"
        ));
        assert!(
            e.contains("`jobs.rec.paths`: /srv/calls/../calls must not contain `..`"),
            "{e}"
        );
    }
}

#[test]
fn a_missing_or_unknown_source_is_named_with_the_kinds() {
    let e = err("[jobs.x]\npaths = [\"/srv\"]\n");
    assert!(
        e.ends_with(":1: `jobs.x.source`: missing; accepted: postgres | files | archive"),
        "{e}"
    );
    let e = err("[jobs.x]\nsource = \"postgre\"\npaths = [\"/srv\"]\n");
    assert!(
        e.ends_with(
            "`postgre` is not accepted; did you mean `postgres`? accepted: postgres | files | archive"
        ),
        "{e}"
    );
}

#[test]
fn formats_are_the_sources_own_names() {
    for f in PgFormat::ALL {
        let c = parse(&format!(
            "[jobs.db]\nsource = \"postgres\"\ndsn = \"host=h\"\nformat = \"{f}\"\n"
        ))
        .unwrap();
        assert_eq!(c.jobs["db"].source.format(), Some(f));
    }
    let e = err("[jobs.db]\nsource = \"postgres\"\ndsn = \"host=h\"\nformat = \"plain\"\n");
    assert!(
        e.ends_with(":4: `jobs.db.format`: `plain` is not accepted; accepted: sql | custom | tar | directory | snapshot"),
        "{e}"
    );
}

#[test]
fn compression_levels_are_checked_once_with_their_defaults() {
    let job = |extra: &str| format!("[jobs.w]\nsource = \"files\"\npaths = [\"/srv\"]\n{extra}");
    let c = parse(&job("compression = \"gzip\"\n")).unwrap();
    assert_eq!(c.jobs["w"].compression, Compression::Gzip { level: 6 });
    let c = parse(&job("level = 19\nthreads = 3\n")).unwrap();
    assert_eq!(
        c.jobs["w"].compression,
        Compression::Zstd {
            level: 19,
            threads: 3
        }
    );
    let c = parse(&job("threads = 0\n")).unwrap();
    assert_eq!(
        c.jobs["w"].compression,
        Compression::Zstd {
            level: 3,
            threads: Compression::default_threads()
        }
    );
    let c = parse(&job("compression = \"none\"\n")).unwrap();
    assert_eq!(c.jobs["w"].compression, Compression::None);
    let e = err(&job("level = 23\n"));
    assert!(
        e.ends_with(":4: `jobs.w.level`: 23 is out of range for zstd; accepted: 1..=22"),
        "{e}"
    );
    let e = err(&job("compression = \"gzip\"\nlevel = 99999999999\n"));
    assert!(
        e.ends_with("99999999999 is out of range for gzip; accepted: 0..=9"),
        "{e}"
    );
    let e = err(&job("compression = \"none\"\nlevel = 1\n"));
    assert!(
        e.ends_with("has no effect with compression = \"none\"; remove it"),
        "{e}"
    );
    let e = err(&job("threads = 257\n"));
    assert!(
        e.ends_with("`jobs.w.threads`: must be 0 (one per core) to 256"),
        "{e}"
    );
}

#[test]
fn counts_have_ranges_and_defaults() {
    let job = |extra: &str| format!("[jobs.w]\nsource = \"files\"\npaths = [\"/srv\"]\n{extra}");
    let c = parse(&job("keep = 3\n")).unwrap();
    assert_eq!((c.jobs["w"].keep, c.jobs["w"].max_local), (3, 6));
    let e = err(&job("keep = 0\n"));
    assert!(
        e.ends_with("0 generations cannot be kept; keep at least 1"),
        "{e}"
    );
    let e = err(&job("keep = 5\nmax_local = 4\n"));
    assert!(
        e.ends_with(
            "max_local = 4 is out of range: it must be at least keep (5) and at most 100000"
        ),
        "{e}"
    );
    let e = err(&job("jobs = 65\n"));
    assert!(e.ends_with("parallel dump jobs must be 1 to 64"), "{e}");
    let e = err("[runner]\nmax_parallel = 0\n");
    assert!(
        e.ends_with(":2: `runner.max_parallel`: must be a whole number from 1 to 256"),
        "{e}"
    );
}

#[test]
fn references_and_job_names_suggest_the_nearest() {
    let c = parse(&format!(
        "{DESTS}[jobs.www]\nsource = \"files\"\npaths = [\"/srv\"]\ndestinations = [\"nas\"]\n"
    ))
    .unwrap();
    assert_eq!(c.jobs["www"].destinations, ["nas"]);
    assert_eq!(
        c.job("wwx").unwrap_err(),
        format!("no job `wwx` in {PATH}; did you mean `www`?")
    );
    assert_eq!(
        c.job("database").unwrap_err(),
        format!("no job `database` in {PATH}; jobs defined: www")
    );
    let e = err(&format!(
        "{DESTS}[jobs.w]\nsource = \"files\"\npaths = [\"/srv\"]\ndestinations = [\"nsa\"]\nnotifiers = [\"ops\"]\n"
    ));
    assert!(
        e.contains(":7: `jobs.w.destinations`: no destination `nsa`; did you mean `nas`?"),
        "{e}"
    );
    assert!(
        e.contains(":8: `jobs.w.notifiers`: no notifier `ops`; no [notifiers.NAME] is defined"),
        "{e}"
    );
}

#[test]
fn verify_and_events_are_checked_against_their_lists() {
    let c = parse(
        "[notifiers.ops]\nplugin = \"webhook\"\non = [\"success\"]\n[jobs.w]\nsource = \"files\"\npaths = [\"/srv\"]\nverify = \"restore\"\n",
    )
    .unwrap();
    assert_eq!(c.jobs["w"].verify, Verify::Restore);
    assert_eq!(c.notifiers["ops"].on, [Event::Success]);
    let e = err("[notifiers.ops]\nplugin = \"webhook\"\non = [\"sucess\"]\n");
    assert!(
        e.ends_with(":3: `notifiers.ops.on`: unknown event \"sucess\"; did you mean `success`? events: success, failure, verify-failed, upload-failed, not-enabled, archive-lag, wal-lag"),
        "{e}"
    );
}

#[test]
fn dsns_are_checked_and_never_echoed_from_a_file() {
    let e = err("[jobs.db]\nsource = \"postgres\"\ndsn = \"calls\"\n");
    assert!(
        e.contains("`jobs.db.dsn`: not a PostgreSQL connection string"),
        "{e}"
    );
    let e = err("[jobs.db]\nsource = \"postgres\"\ndsn = \"postgresql://h:99999/db\"\n");
    assert!(
        e.contains("the port `99999` is not a number from 1 to 65535"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dsn");
    std::fs::write(&f, "postgresql://app:secret@h:0x/db\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(&format!(
        "[jobs.db]\nsource = \"postgres\"\ndsn_file = \"{}\"\n",
        f.display()
    ));
    assert!(e.contains("`jobs.db.dsn_file`: the port `0x`"), "{e}");
    assert!(!e.contains("secret"), "{e}");
    let e = err(&format!(
        "[jobs.db]\nsource = \"postgres\"\ndsn = \"host=h\"\ndsn_file = \"{}\"\n",
        f.display()
    ));
    assert!(
        e.contains("give either `dsn` or `dsn_file`, not both"),
        "{e}"
    );
}

#[test]
fn an_archive_job_gets_its_spec_and_other_kinds_refuse_its_keys() {
    let c = parse(
        "[jobs.rec]\nsource = \"archive\"\npaths = [\"/var/calls\"]\nvolume_size = \"8MiB\"\nseal_after = \"1h\"\narchive_keep = \"400d\"\n",
    )
    .unwrap();
    let JobSource::Archive { paths, spec } = &c.jobs["rec"].source else {
        panic!("{:?}", c.jobs["rec"].source)
    };
    assert_eq!(paths, &[PathBuf::from("/var/calls")]);
    assert_eq!(spec.volume_size, 8 << 20);
    assert_eq!(spec.seal_after, Duration::from_secs(3600));
    assert_eq!(spec.archive_keep, Some(Duration::from_secs(400 * 86400)));
    assert_eq!(
        spec.archive_lag,
        Duration::from_secs(7200),
        "2 × seal_after"
    );
    assert_eq!(c.jobs["rec"].source.kind(), "archive");
    let c = parse("[jobs.rec]\nsource = \"archive\"\npaths = [\"/var/calls\"]\n").unwrap();
    let spec = c.jobs["rec"].source.archive().unwrap();
    assert_eq!((spec.volume_size, spec.archive_keep), (4 << 30, None));
    let e = err("[jobs.www]\nsource = \"files\"\npaths = [\"/srv\"]\nseal_after = \"1h\"\n");
    assert!(
        e.contains(":4: `jobs.www.seal_after`: only used with source = \"archive\""),
        "{e}"
    );
    let e = err("[jobs.rec]\nsource = \"archive\"\n");
    assert!(
        e.contains("`jobs.rec.paths`: required with source = \"archive\""),
        "{e}"
    );
    let e = err(
        "[jobs.rec]\nsource = \"archive\"\npaths = [\"/c\"]\nvolume_size = \"10KiB\"\narchive_lag = \"0s\"\n",
    );
    assert!(
        e.contains(":4: `jobs.rec.volume_size`: `10KiB` is not a volume size from 1MiB to 1TiB"),
        "{e}"
    );
    assert!(
        e.contains(":5: `jobs.rec.archive_lag`: `0s` is out of range"),
        "{e}"
    );
}

#[test]
fn hot_backup_needs_wal_and_a_restore_verification() {
    let job = |extra: &str| {
        format!(
            "[jobs.db]\nsource = \"postgres\"\ndsn = \"postgresql://postgres@127.0.0.1/postgres\"\nformat = \"snapshot\"\n{extra}\n"
        )
    };
    let c = parse(&job(
        "wal = true\nverify = \"restore\"\nhot_backup = \"/var/lib/offsite/hot/db\"",
    ))
    .unwrap();
    assert_eq!(
        c.jobs["db"].wal.as_ref().unwrap().hot_backup,
        Some(PathBuf::from("/var/lib/offsite/hot/db"))
    );
    let c = parse(&job("wal = true")).unwrap();
    assert_eq!(c.jobs["db"].wal.as_ref().unwrap().hot_backup, None);
    let e = err(&job("wal = true\nhot_backup = \"/hot\""));
    assert!(
        e.contains("jobs.db.hot_backup") && e.contains("verify = \"restore\""),
        "{e}"
    );
    let e = err(&job("verify = \"restore\"\nhot_backup = \"/hot\""));
    assert!(e.contains("needs wal = true"), "{e}");
    let e = err(&job(
        "wal = true\nverify = \"restore\"\nhot_backup = \"hot\"",
    ));
    assert!(e.contains("must be an absolute path"), "{e}");
}
