//! Proves the test bed is real: a Kafka broker that creates topics, keeps
//! keyed records in order per partition and stores a consumer group's
//! committed offsets, and a PostgreSQL server with transactions that survives
//! restarts. If these fail, nothing else in the suite can be trusted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;

use crate::support::{
    create_topic, fresh_database, kafka_bootstrap, unique_name, PrivatePostgres, RestartMode,
};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A record as seen on the broker: where it sits and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

fn consumer(group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("creating a consumer")
}

async fn receive(consumer: &StreamConsumer, count: usize) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "received {} of {count} records within {RECEIVE_TIMEOUT:?}",
                    seen.len()
                )
            })
            .expect("consuming a record");
        let text = |bytes: Option<&[u8]>| String::from_utf8(bytes.unwrap_or_default().to_vec());
        seen.push(Seen {
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()).expect("utf-8 key"),
            value: text(message.payload()).expect("utf-8 value"),
        });
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_with_the_admin_api_carries_records_through_a_consumer_group() {
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 300;
    const KEYS: usize = 12;
    let topic = unique_name("testbed");
    let group = unique_name("testbed_group");
    create_topic(&topic, PARTITIONS).await;

    // Produce keyed records; each key is a case whose records must stay in order.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("creating a producer");
    let mut produced = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(err, _)| panic!("producing record {i}: {err}"));
        produced.push(Seen {
            partition: delivery.partition,
            offset: delivery.offset,
            key,
            value,
        });
    }
    let partitions_used: BTreeSet<i32> = produced.iter().map(|r| r.partition).collect();
    assert_eq!(
        partitions_used.len(),
        PARTITIONS as usize,
        "{KEYS} keys should spread over all {PARTITIONS} partitions, got {partitions_used:?}"
    );
    let mut partition_of_key = HashMap::new();
    for record in &produced {
        let partition = *partition_of_key
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(
            partition, record.partition,
            "key {} changed partition",
            record.key
        );
    }

    // The first member of the group reads part of the topic and commits what it read.
    let first = consumer(&group);
    first.subscribe(&[&topic]).expect("subscribing");
    let first_half = receive(&first, RECORDS / 2).await;
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &first_half {
        let next = next_offsets.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
    }
    let mut to_commit = TopicPartitionList::new();
    for (&partition, &next) in &next_offsets {
        to_commit
            .add_partition_offset(&topic, partition, Offset::Offset(next))
            .expect("building the offsets to commit");
    }
    tokio::task::block_in_place(|| first.commit(&to_commit, CommitMode::Sync))
        .expect("committing offsets");

    let mut all_partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        all_partitions.add_partition(&topic, partition);
    }
    let committed = tokio::task::block_in_place(|| {
        first.committed_offsets(all_partitions, Duration::from_secs(10))
    })
    .expect("reading committed offsets");
    for partition in 0..PARTITIONS {
        let stored = committed
            .find_partition(&topic, partition)
            .expect("committed_offsets lists every partition asked for")
            .offset();
        let expected = next_offsets
            .get(&partition)
            .map_or(Offset::Invalid, |&n| Offset::Offset(n));
        assert_eq!(
            stored, expected,
            "committed offset of partition {partition}"
        );
    }
    // Dropping the consumer leaves the group, so the next member gets every partition.
    tokio::task::block_in_place(|| drop(first));

    // A second member of the same group resumes exactly after the committed offsets.
    let second = consumer(&group);
    second.subscribe(&[&topic]).expect("subscribing");
    let second_half = receive(&second, RECORDS - first_half.len()).await;
    for record in &second_half {
        let committed_next = next_offsets.get(&record.partition).copied().unwrap_or(0);
        assert!(
            record.offset >= committed_next,
            "the second member re-read {record:?}, below the committed offset {committed_next}"
        );
    }
    tokio::task::block_in_place(|| drop(second));

    // Together the two members read every record exactly once, unchanged.
    let mut consumed: Vec<Seen> = first_half.into_iter().chain(second_half).collect();
    consumed.sort();
    let mut expected = produced.clone();
    expected.sort();
    assert_eq!(consumed, expected);

    // And each key's records came out in the order they were produced.
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for record in &consumed {
        let index: usize = record.value["value-".len()..]
            .parse()
            .expect("value-<index>");
        by_key.entry(record.key.as_str()).or_default().push(index);
    }
    for (key, indexes) in by_key {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {indexes:?}"
        );
    }
}

#[tokio::test]
async fn sqlx_runs_a_transaction_against_the_real_postgres() {
    let (pool, _url) = fresh_database().await;

    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await
        .expect("SELECT version()");
    assert!(
        version.contains("PostgreSQL"),
        "unexpected server: {version}"
    );

    sqlx::query("CREATE TABLE cases (id TEXT PRIMARY KEY, state TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("creating a table");

    let mut tx = pool.begin().await.expect("BEGIN");
    sqlx::query("INSERT INTO cases (id, state) VALUES ($1, $2)")
        .bind("rolled-back")
        .bind("received")
        .execute(&mut *tx)
        .await
        .expect("INSERT");
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&mut *tx)
        .await
        .expect("counting inside the transaction");
    assert_eq!(inside, 1, "the transaction sees its own insert");
    tx.rollback().await.expect("ROLLBACK");

    let mut tx = pool.begin().await.expect("BEGIN");
    sqlx::query("INSERT INTO cases (id, state) VALUES ($1, $2)")
        .bind("committed")
        .bind("resolved")
        .execute(&mut *tx)
        .await
        .expect("INSERT");
    tx.commit().await.expect("COMMIT");

    let rows = sqlx::query("SELECT id, state FROM cases ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("SELECT");
    let rows: Vec<(String, String)> = rows
        .iter()
        .map(|row| (row.get("id"), row.get("state")))
        .collect();
    assert_eq!(rows, vec![("committed".to_owned(), "resolved".to_owned())]);
}

#[tokio::test]
async fn committed_rows_survive_a_fast_and_an_immediate_restart_of_postgres() {
    let server = PrivatePostgres::start().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(server.url())
        .await
        .expect("connecting to the private PostgreSQL");
    sqlx::query("CREATE TABLE survivors (n INT PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("creating a table");

    let mut held = pool
        .acquire()
        .await
        .expect("a connection held across the restart");
    for (n, mode) in [(1, RestartMode::Fast), (2, RestartMode::Immediate)] {
        sqlx::query("INSERT INTO survivors (n) VALUES ($1)")
            .bind(n)
            .execute(&pool)
            .await
            .expect("INSERT before the restart");
        server.restart(mode).await;

        // A connection that was open is cut by the restart; the pool opens new ones.
        if n == 1 {
            assert!(
                sqlx::query("SELECT 1").execute(&mut *held).await.is_err(),
                "a connection opened before a restart should be closed by it"
            );
        }
        let survivors: Vec<i32> = sqlx::query_scalar("SELECT n FROM survivors ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|err| panic!("querying after a {mode:?} restart: {err}"));
        assert_eq!(
            survivors,
            (1..=n).collect::<Vec<_>>(),
            "rows after a {mode:?} restart"
        );
    }
    drop(held);
    pool.close().await;
}
