//! The throw-away PostgreSQL cluster of the tests ([`PgCluster`]) itself: it
//! answers at its URL, keeps committed rows across a `kill -9` and a clean
//! stop, runs beside another one, and leaves nothing behind.

use std::net::TcpStream;

use crate::common::postgres::PgCluster;

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn a_cluster_keeps_committed_rows_across_a_kill_and_a_stop() {
    let Some(pg) = PgCluster::start() else { return };
    assert_eq!(
        pg.url(),
        format!("postgres://llmproxy@127.0.0.1:{}/llmproxy", pg.port())
    );
    assert_eq!(pg.psql("select 1"), "1");
    assert_eq!(
        pg.psql("select current_user || ' ' || current_database()"),
        "llmproxy llmproxy"
    );
    pg.psql("create table kept (n int); insert into kept values (42)");

    let before = pg.postmaster_pid();
    pg.kill();
    assert!(refused(pg.port()), "the killed server still answers");
    pg.start_again();
    assert_ne!(pg.postmaster_pid(), before);
    assert_eq!(pg.psql("select n from kept"), "42");
    assert!(
        pg.log().contains("database system was interrupted"),
        "no crash recovery in the log:\n{}",
        pg.log()
    );

    pg.stop();
    assert!(refused(pg.port()), "the stopped server still answers");
    pg.start_again();
    assert_eq!(pg.psql("select n from kept"), "42");
}

#[test]
fn two_clusters_run_side_by_side() {
    let Some(a) = PgCluster::start() else { return };
    let Some(b) = PgCluster::start() else { return };
    assert_ne!(a.port(), b.port());
    a.psql("create table only_in_a (n int)");
    assert_eq!(
        b.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
        "0"
    );
    assert_eq!(
        a.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
        "1"
    );
}

#[test]
fn a_dropped_cluster_leaves_nothing_behind() {
    let Some(pg) = PgCluster::start() else { return };
    let (port, dir) = (pg.port(), pg.dir().to_path_buf());
    assert!(dir.join("data/PG_VERSION").is_file());
    drop(pg);
    assert!(refused(port), "the dropped server still answers");
    assert!(!dir.exists(), "{} is still there", dir.display());
}
