//! Two local ClickHouse servers as the two shards of a cluster, with ZooKeeper for
//! `ON CLUSTER` DDL: migrations reach both, inserts land on both, queries see all rows.

use crate::faults::{chunk, truth};
use isometer_store::{ManagedClickHouse, ServerOptions, Store, WriterOptions};
use isometer_testkit::zookeeper::ZooKeeper;

const CLUSTER: &str = "isometer_test";

fn cluster_config(tcp_ports: [u16; 2], zookeeper: u16) -> String {
    let shards: String = tcp_ports
        .iter()
        .map(|port| {
            format!("<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>")
        })
        .collect();
    format!(
        "<remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>\n\
         <zookeeper><node><host>127.0.0.1</host><port>{zookeeper}</port></node></zookeeper>\n\
         <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_take_the_rows_and_queries_see_them_all() {
    const TASKS: u64 = 20_000;
    let zookeeper = tokio::task::spawn_blocking(ZooKeeper::start)
        .await
        .expect("joined")
        .expect("zookeeper starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let tcp = [
        isometer_testkit::free_port().expect("port"),
        isometer_testkit::free_port().expect("port"),
    ];
    let mut servers = Vec::new();
    for (i, port) in tcp.iter().enumerate() {
        let options = ServerOptions {
            tcp_port: Some(*port),
            extra_config: cluster_config(tcp, zookeeper.port),
            ..ServerOptions::new(dir.path().join(format!("shard{i}")))
        };
        servers.push(
            tokio::task::spawn_blocking(move || ManagedClickHouse::start(&options))
                .await
                .expect("joined")
                .expect("shard starts"),
        );
    }

    let store = match Store::open_on_cluster(&servers[0].url(), "sharded", CLUSTER).await {
        Ok(store) => store,
        Err(e) => {
            for i in 0..2 {
                let log = dir.path().join(format!("shard{i}/log/error.log"));
                eprintln!(
                    "--- {}\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            panic!("database on both shards: {e}");
        }
    };
    store.migrate().await.expect("migrated on the cluster");
    let shards: Vec<Store> = servers
        .iter()
        .map(|s| Store::new(&s.url(), "sharded"))
        .collect();
    for shard in &shards {
        assert_eq!(
            shard
                .table_rows("usage_events_local")
                .await
                .expect("local table"),
            0
        );
    }

    let spool = dir.path().join("spool");
    let writer = store
        .writer(WriterOptions {
            spool_dir: Some(spool),
            ..WriterOptions::default()
        })
        .expect("writer");
    for c in 0..TASKS / 1_000 {
        writer
            .record_many(&chunk(c * 1_000, 1_000))
            .await
            .expect("recorded");
    }
    writer.flush().await.expect("flushed");

    let expected = truth(TASKS);
    let mut on_shards = 0;
    for shard in &shards {
        let rows = shard.table_rows("usage_events_local").await.expect("count");
        assert!(
            rows > expected.events / 4,
            "a shard holds only {rows} events"
        );
        on_shards += rows;
    }
    assert_eq!(
        on_shards, expected.events,
        "each event on exactly one shard"
    );
    // Through the Distributed tables, raw and rolled up, the coordinator sees everything.
    assert_eq!(store.reconcile().await.expect("reconcile"), expected);
    drop(servers);
    drop(zookeeper);
}
