//! S3 through whole jobs: retention removes old objects there, and a
//! database shipped to S3 comes back from S3 alone (local store deleted)
//! into a new database, table by table.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsite_tests::paths::{offsite_bin, wasm};
use offsite_tests::postgres::PgCluster;
use offsite_tests::proc::{run, text};
use offsite_tests::s3::Moto;

fn config(root: &Path, moto: &Moto, source: &str, keep: usize) -> PathBuf {
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::fs::copy(wasm("offsite_s3"), root.join("plugins/s3.wasm")).unwrap();
    offsite_tests::jobs::write_secret(&root.join("s3.secret"), "secret\n");
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

[destinations.s3]
plugin = "s3"
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "backups"
prefix = "calls/"
access_key_id = "testing"
secret_access_key_file = "{r}/s3.secret"

[jobs.shop]
{source}
keep = {keep}
destinations = ["s3"]
"#,
            r = root.display(),
            endpoint = moto.endpoint(),
        ),
    )
    .unwrap();
    cfg
}

fn offsite(cfg: &Path, args: &[&str]) -> (bool, String) {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = run(Command::new(offsite_bin())
        .arg("--config")
        .arg(cfg)
        .args(args));
    (o.status.success(), text(&o))
}

fn data_objects(moto: &Moto) -> Vec<String> {
    let mut v: Vec<String> = moto
        .objects("backups", "calls/")
        .into_iter()
        .map(|(k, _, _)| k)
        .filter(|k| !k.ends_with(".manifest.json"))
        .collect();
    v.sort();
    v
}

#[test]
fn retention_removes_old_generations_from_s3() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tree")).unwrap();
    std::fs::write(dir.path().join("tree/a.txt"), "alpha").unwrap();
    let source = format!(
        "source = \"files\"\npaths = [\"{}\"]",
        dir.path().join("tree").display()
    );
    let cfg = config(dir.path(), &moto, &source, 2);
    let mut names = vec![];
    for _ in 0..4 {
        let (ok, out) = offsite(&cfg, &["run", "shop"]);
        assert!(ok, "{out}");
        names = data_objects(&moto);
    }
    assert_eq!(names.len(), 2, "{names:?}");
    let manifests = moto
        .objects("backups", "calls/")
        .into_iter()
        .filter(|(k, _, _)| k.ends_with(".manifest.json"))
        .count();
    assert_eq!(manifests, 2, "manifests go with their generations");
    assert!(moto.multipart_uploads("backups").is_empty());
}

#[test]
fn a_database_shipped_to_s3_restores_from_s3_alone_into_a_new_database() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text, price numeric);
         INSERT INTO orders (item, price) SELECT md5(g::text), g * 1.5 FROM generate_series(1, 5000) g;
         CREATE TABLE customers (id int PRIMARY KEY, name text);
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 321) g;",
    );
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "source = \"postgres\"\ndsn = \"{}\"\nformat = \"custom\"",
        pg.dsn("shop")
    );
    let cfg = config(dir.path(), &moto, &source, 3);
    let (ok, out) = offsite(&cfg, &["run", "shop"]);
    assert!(ok, "{out}");
    assert_eq!(data_objects(&moto).len(), 1);

    // The whole local store is lost.
    std::fs::remove_dir_all(dir.path().join("backups")).unwrap();
    let (ok, out) = offsite(
        &cfg,
        &[
            "restore",
            "shop",
            "--from",
            "s3",
            "--to-dsn",
            &pg.dsn("shop_restored"),
        ],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("secret\n"), "{out}");
    assert_eq!(pg.fingerprint("shop_restored"), pg.fingerprint("shop"));
}
