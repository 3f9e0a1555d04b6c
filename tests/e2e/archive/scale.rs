//! What restic and borg users hit at scale, as tests: `find` over every
//! snapshot takes minutes, and `borg mount` of a big repository loads every
//! file's metadata and is killed by the OOM killer. Here `find` over a
//! catalog of 300,000 files streams: its peak memory stays far below what
//! holding the rows would take; path and file-name prefixes answer exactly.

use std::process::Stdio;

use super::*;

/// Peak resident memory (KiB) and exit status of `cmd`, from wait4 (which
/// reaps the child: std's `wait` would find it gone).
#[allow(clippy::zombie_processes)]
fn peak_rss(mut cmd: Command) -> (i64, i32) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    (ru.ru_maxrss, libc::WEXITSTATUS(status))
}

/// `n` more members in the job's catalog (one per path, in the first
/// volume), named `/srv/calls/dNNNNN/call-NNNNNNNN.wav`, one second apart.
fn grow_catalog(catalog: &Path, n: i64) {
    let mut db = rusqlite::Connection::open(catalog).unwrap();
    let tx = db.transaction().unwrap();
    let vid: i64 = tx
        .query_row("SELECT id FROM volumes ORDER BY seq LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    {
        let mut path = tx
            .prepare("INSERT INTO paths(path, name) VALUES (?1, ?2)")
            .unwrap();
        let mut member = tx
            .prepare(
                "INSERT INTO members(path_id, volume_id, offset, clen, header_len, size, mtime_ns,
                 ctime_ns, ino, dev, mode, uid, gid, sha256, archived_at)
                 VALUES (?1, ?2, 0, 1, 512, 1000, ?3, 0, ?1, 0, 33188, 0, 0, ?4, ?3)",
            )
            .unwrap();
        let sha = "ab".repeat(32);
        for i in 0..n {
            let name = format!("call-{i:08}.wav");
            path.execute(rusqlite::params![
                format!("/srv/calls/d{:05}/{name}", i / 1000).as_bytes(),
                name.as_bytes()
            ])
            .unwrap();
            let pid = tx.last_insert_rowid();
            member
                .execute(rusqlite::params![
                    pid,
                    vid,
                    1_700_000_000_000_000_000i64 + i * 1_000_000_000,
                    sha
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn find_streams_a_large_catalog_in_bounded_memory() {
    let s = Setup::new(&["offsite_local_dir"]);
    let tree = s.dir("calls");
    config(&s, &tree, "8MiB", "1h");
    std::fs::write(tree.join("first.wav"), b"first").unwrap();
    s.run_ok("rec");
    let catalog = s.job_dir("rec").join("catalog.sqlite");
    let (small, code) = peak_rss(s.command(&["find", "rec", "*", "--json"]));
    assert_eq!(code, 0);
    let n = 300_000;
    grow_catalog(&catalog, n);
    // Every row, as JSON: streamed.
    let o = s
        .command(&["find", "rec", "/srv/calls/d00042/*", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[0]["path"], "/srv/calls/d00042/call-00042000.wav");
    let (big, code) = peak_rss(s.command(&["find", "rec", "*", "--json"]));
    assert_eq!(code, 0);
    // 300,000 rows held as members would be well over 100 MiB.
    assert!(
        big < small + 48 * 1024,
        "find over {n} files peaked at {big} KiB (over a 1-file catalog: {small} KiB)"
    );
    // A file-name prefix with a time bound: exactly its files.
    let o = s
        .command(&["find", "rec", "call-0004200*", "--since", "2023-11-14"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let want: Vec<String> = (42000..42010)
        .map(|i| format!("/srv/calls/d00042/call-{i:08}.wav"))
        .collect();
    assert_eq!(names, want);
}
