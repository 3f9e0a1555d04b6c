//! S3 through whole jobs: retention removes old objects there, and a
//! database shipped to S3 comes back from S3 alone (local store deleted)
//! into a new database, table by table.

use offsite_tests::jobs::{Setup, write_secret};
use offsite_tests::postgres::PgCluster;
use offsite_tests::s3::Moto;

fn config(moto: &Moto, source: impl FnOnce(&Setup) -> String, keep: usize) -> Setup {
    let s = Setup::new(&["offsite_s3"]);
    let secret = s.root().join("s3.secret");
    write_secret(&secret, "secret\n");
    let source = source(&s);
    s.write_config(&format!(
        r#"
[destinations.s3]
plugin = "s3"
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "backups"
prefix = "calls/"
access_key_id = "testing"
secret_access_key_file = "{secret}"

[jobs.shop]
{source}
keep = {keep}
destinations = ["s3"]
"#,
        endpoint = moto.endpoint(),
        secret = secret.display(),
    ));
    s
}

fn offsite(s: &Setup, args: &[&str]) -> (bool, String) {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = s.offsite(args);
    (code == 0, out)
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
    let s = config(
        &moto,
        |s| {
            let tree = s.dir("tree");
            std::fs::write(tree.join("a.txt"), "alpha").unwrap();
            format!("source = \"files\"\npaths = [\"{}\"]", tree.display())
        },
        2,
    );
    let mut names = vec![];
    for _ in 0..4 {
        let (ok, out) = offsite(&s, &["run", "shop"]);
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
    let source = format!(
        "source = \"postgres\"\ndsn = \"{}\"\nformat = \"custom\"",
        pg.dsn("shop")
    );
    let s = config(&moto, |_| source, 3);
    let (ok, out) = offsite(&s, &["run", "shop"]);
    assert!(ok, "{out}");
    assert_eq!(data_objects(&moto).len(), 1);

    // The whole local store is lost.
    std::fs::remove_dir_all(&s.backup_dir).unwrap();
    let (ok, out) = offsite(
        &s,
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
