//! `verify = "restore"`: the generation is restored into a scratch database
//! and its row counts compared with the counts taken in the dump's own
//! snapshot; a dump that cannot be restored fails.

use offsite_tests::jobs::{Setup, manifests_in};
use offsite_tests::postgres::PgCluster;

fn write_config(s: &Setup, dsn: &str, format: &str, verify: &str) {
    s.write_config(&format!(
        r#"
[destinations.nas]
plugin = "local-dir"
path = "{nas}"

[jobs.shop]
source = "postgres"
dsn = "{dsn}"
format = "{format}"
verify = "{verify}"
destinations = ["nas"]
"#,
        nas = s.dir("nas").display()
    ));
}

fn offsite(s: &Setup, args: &[&str]) -> (bool, String) {
    let (code, out) = s.offsite(args);
    (code == 0, out)
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
    let s = Setup::new(&["offsite_local_dir"]);
    write_config(&s, &pg.dsn("shop"), "custom", "restore");
    let (ok, out) = offsite(&s, &["run", "shop"]);
    assert!(ok, "{out}");
    let m = &manifests_in(&s.backup_dir.join("shop"))[0];
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
    let s = Setup::new(&["offsite_local_dir"]);
    write_config(&s, &pg.dsn("shop"), "custom", "checksum");
    let (ok, out) = offsite(&s, &["run", "shop"]);
    assert!(ok, "{out}");
    let m = manifests_in(&s.backup_dir.join("shop")).remove(0);
    let name = m["name"].as_str().unwrap().to_string();
    let data = s.backup_dir.join("shop").join(&name);
    // Cut the stored file and record the new sha256 and size by hand: the
    // checksum now passes, only a restore can tell.
    let bytes = std::fs::read(&data).unwrap();
    let cut = &bytes[..bytes.len() * 2 / 3];
    std::fs::write(&data, cut).unwrap();
    let mut m2 = m.clone();
    m2["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cut)).into();
    m2["size"] = (cut.len() as u64).into();
    std::fs::write(
        s.backup_dir
            .join("shop")
            .join(format!("{name}.manifest.json")),
        serde_json::to_vec_pretty(&m2).unwrap(),
    )
    .unwrap();

    let (ok, out) = offsite(&s, &["verify", "shop"]);
    assert!(ok, "checksum alone cannot see it: {out}");

    write_config(&s, &pg.dsn("shop"), "custom", "restore");
    let (ok, out) = offsite(&s, &["verify", "shop"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("FAILED: {name}")), "{out}");
    let after = manifests_in(&s.backup_dir.join("shop")).remove(0);
    assert_eq!(after["health"], "bad", "{after}");
}
