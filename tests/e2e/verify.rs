//! `verify = "restore"`: the generation is restored into a scratch database
//! and its row counts compared with the counts taken in the dump's own
//! snapshot; a dump that cannot be restored fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::postgres::PgCluster;
use offsite_tests::proc::{run, text};

fn write_config(root: &Path, dsn: &str, format: &str, verify: &str) -> PathBuf {
    for d in ["plugins", "nas"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(
        wasm("offsite_local_dir"),
        root.join("plugins/local-dir.wasm"),
    )
    .unwrap();
    let cfg = root.join("offsite.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[runner]
backup_dir = "{r}/backups"
plugins_dir = "{r}/plugins"
state_dir = "{r}/state"
log_file = "{r}/backup.log"

[destinations.nas]
plugin = "local-dir"
path = "{r}/nas"

[jobs.shop]
source = "postgres"
dsn = "{dsn}"
format = "{format}"
verify = "{verify}"
destinations = ["nas"]
"#,
            r = root.display()
        ),
    )
    .unwrap();
    cfg
}

fn offsite(cfg: &Path, args: &[&str]) -> (bool, String) {
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(cfg)
        .args(args));
    (o.status.success(), text(&o))
}

fn manifests(root: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("backups/shop"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    v.sort();
    v.iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn seed(pg: &PgCluster) {
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);
         INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 1234) g;
         CREATE SCHEMA audit;
         CREATE TABLE audit.log (at timestamptz DEFAULT now(), line text);
         INSERT INTO audit.log (line) SELECT md5(g::text) FROM generate_series(1, 77) g;",
    );
}

#[test]
fn restore_verification_compares_row_counts_from_the_dump_snapshot() {
    let pg = PgCluster::start();
    seed(&pg);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &pg.dsn("shop"), "custom", "restore");
    let (ok, out) = offsite(&cfg, &["run", "shop"]);
    assert!(ok, "{out}");
    let m = &manifests(dir.path())[0];
    assert_eq!(m["table_rows"]["public.orders"], 1234, "{m}");
    assert_eq!(m["table_rows"]["audit.log"], 77, "{m}");
    let restore = m["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["method"] == "restore")
        .expect("a restore verification");
    assert_eq!(restore["ok"], true, "{m}");
    assert!(
        restore["detail"]
            .as_str()
            .unwrap()
            .contains("2 tables, row counts match the dump's snapshot"),
        "{m}"
    );
    // The scratch database is gone.
    let dbs = pg.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1");
    assert!(!dbs.contains("offsite_verify"), "{dbs}");
}

#[test]
fn a_truncated_custom_dump_with_its_sha256_recorded_fails_restore_verification() {
    let pg = PgCluster::start();
    seed(&pg);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &pg.dsn("shop"), "custom", "checksum");
    let (ok, out) = offsite(&cfg, &["run", "shop"]);
    assert!(ok, "{out}");
    let m = manifests(dir.path()).remove(0);
    let name = m["name"].as_str().unwrap().to_string();
    let data = dir.path().join("backups/shop").join(&name);
    // Cut the stored file and record the new sha256 and size by hand: the
    // checksum now passes, only a restore can tell.
    let bytes = std::fs::read(&data).unwrap();
    let cut = &bytes[..bytes.len() * 2 / 3];
    std::fs::write(&data, cut).unwrap();
    let mut m2 = m.clone();
    m2["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cut)).into();
    m2["size"] = (cut.len() as u64).into();
    std::fs::write(
        dir.path()
            .join("backups/shop")
            .join(format!("{name}.manifest.json")),
        serde_json::to_vec_pretty(&m2).unwrap(),
    )
    .unwrap();

    let (ok, out) = offsite(&cfg, &["verify", "shop"]);
    assert!(ok, "checksum alone cannot see it: {out}");

    let cfg = write_config(dir.path(), &pg.dsn("shop"), "custom", "restore");
    let (ok, out) = offsite(&cfg, &["verify", "shop"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("FAILED: {name}")), "{out}");
    let after = manifests(dir.path()).remove(0);
    assert_eq!(after["health"], "bad", "{after}");
}
