//! Fault injection against real broker processes: SIGKILL at random moments under a mixed
//! load (acks=all producers, a fetching consumer, offset commits), segment and index files
//! torn or damaged while the broker is down, and a full disk.
//!
//! What holds throughout: every acknowledged record is at its acknowledged offset, in its
//! producer's order, with valid CRCs; offsets stay dense; every acknowledged commit reads
//! back; recovery cuts a log at its last valid batch and rebuilds the indexes; a full disk
//! gets `KAFKA_STORAGE_ERROR`, leaves no torn batch and no hole, and the broker stays up.
//!
//! `MQ_FAULTS_SEED` replays the kill test's random choices; `MQ_SOAK_SECS=N` runs its rounds
//! for N seconds (a fresh broker every few rounds, so that checking stays cheap) and prints a
//! summary line (run with `--nocapture` to see it).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mq_client::{
    Acks, Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, ConsumerRecord,
    DeliveryFuture, Producer, ProducerConfig, ProducerRecord, SeekTo, TopicPartition,
};
use mq_protocol::batch::BatchIter;
use mq_protocol::request::Request;
use mq_protocol::{records, ErrorCode};
use mq_tests::raw::{batch_of, RawConnection};
use mq_tests::rng::Rng;
use mq_tests::BrokerProcess;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

// -------------------------------------------------------------------------------------------
// kill -9 under load

const LOAD_TOPIC: &str = "load";
const LOAD_PARTITIONS: i32 = 2;
/// Producers; producer `p` writes to partition `p % LOAD_PARTITIONS`, so partitions are shared.
const PRODUCERS: usize = 3;
const LOAD_GROUP: &str = "auditors";
/// Rounds of the default (CI) run.
const CI_ROUNDS: u64 = 6;
/// Rounds on one broker (and data directory) before the soak starts a fresh one.
const ROUNDS_PER_BROKER: u64 = 10;

/// What the load's clients saw, across the rounds on one broker: the truth the log is checked
/// against.
#[derive(Debug, Default)]
struct Ledger {
    /// Per producer: acknowledged sequence number -> the offset the acknowledgement gave.
    acknowledged: Vec<BTreeMap<u64, i64>>,
    /// Per producer: the next sequence number; every lower one was handed to `send`.
    next_sequence: Vec<u64>,
    /// Deliveries that failed for good (their records may or may not be in the log).
    failed_deliveries: u64,
    /// Records the consumer read: (partition, offset) -> value.
    consumed: BTreeMap<(i32, i64), Bytes>,
    /// Per partition: the last acknowledged commit, and the commits sent after it (any of
    /// which may have landed without its acknowledgement arriving).
    commits: BTreeMap<i32, (Option<i64>, Vec<i64>)>,
    /// Commits acknowledged.
    commits_acknowledged: u64,
    /// What the load itself found wrong (a corrupt batch, a record changed under the
    /// consumer); checked after every round.
    violations: Vec<String>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            acknowledged: vec![BTreeMap::new(); PRODUCERS],
            next_sequence: vec![0; PRODUCERS],
            ..Ledger::default()
        }
    }

    fn records_acknowledged(&self) -> usize {
        self.acknowledged.iter().map(BTreeMap::len).sum()
    }
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// Totals of a run, for the summary line.
#[derive(Debug, Default)]
struct Totals {
    rounds: u64,
    kills: u64,
    brokers: u64,
    records_acknowledged: usize,
    commits_acknowledged: u64,
    failed_deliveries: u64,
    duplicate_copies: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record_or_commit() {
    // Goal: whatever moment the broker dies at, what it acknowledged survives. Method: three
    // acks=all producers, a consumer that fetches and commits its positions, and a SIGKILL at
    // a random moment of each round; the broker restarts, the load reconnects by itself, then
    // stops, and the whole log and the committed offsets are checked against what the
    // clients saw acknowledged. `MQ_SOAK_SECS` turns this into a soak.
    let seed = Rng::seed_from_env("MQ_FAULTS_SEED");
    let mut rng = Rng::new(seed);
    let soak = std::env::var("MQ_SOAK_SECS")
        .ok()
        .map(|secs| Duration::from_secs(secs.parse().expect("MQ_SOAK_SECS is whole seconds")));
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut round = 0u64;
    while round < CI_ROUNDS || soak.is_some_and(|soak| started.elapsed() < soak) {
        let broker_rounds = if soak.is_some() {
            ROUNDS_PER_BROKER
        } else {
            CI_ROUNDS
        };
        let mut broker = BrokerProcess::start();
        totals.brokers += 1;
        let client = connect(&broker).await;
        Admin::new(client.clone())
            .create_topic(LOAD_TOPIC, LOAD_PARTITIONS, 1, &[])
            .await
            .unwrap();
        let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new()));
        for _ in 0..broker_rounds {
            round += 1;
            let load = Load::start(&client, &ledger);
            tokio::time::sleep(Duration::from_millis(rng.range(100..700))).await;
            broker.kill9();
            totals.kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.range(0..150))).await;
            broker.restart();
            // The load reconnects and goes on for a while on the restarted broker.
            tokio::time::sleep(Duration::from_millis(rng.range(50..300))).await;
            load.stop().await;
            let duplicates = verify(&client, broker.address, &ledger)
                .await
                .unwrap_or_else(|problem| panic!("round {round} (seed {seed}): {problem}"));
            totals.duplicate_copies += duplicates;
            if soak.is_some_and(|soak| started.elapsed() >= soak) {
                break;
            }
        }
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.records_acknowledged() > 0 && ledger.commits_acknowledged > 0,
            "the load made no progress: {} records, {} commits acknowledged",
            ledger.records_acknowledged(),
            ledger.commits_acknowledged
        );
        totals.records_acknowledged += ledger.records_acknowledged();
        totals.commits_acknowledged += ledger.commits_acknowledged;
        totals.failed_deliveries += ledger.failed_deliveries;
    }
    totals.rounds = round;
    eprintln!(
        "faults summary: rounds {}, kills {}, brokers {}, records acknowledged {}, commits acknowledged {}, failed deliveries {}, duplicate copies {}, seconds {:.1}, seed {seed}",
        totals.rounds,
        totals.kills,
        totals.brokers,
        totals.records_acknowledged,
        totals.commits_acknowledged,
        totals.failed_deliveries,
        totals.duplicate_copies,
        started.elapsed().as_secs_f64()
    );
}

async fn connect(broker: &BrokerProcess) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    Client::connect(&broker.bootstrap(), config).await.unwrap()
}

/// The running load of one round.
struct Load {
    /// Tells every task to finish.
    stop: Arc<AtomicBool>,
    /// The producers and the consumer.
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, ledger: &SharedLedger) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks: Vec<JoinHandle<()>> = (0..PRODUCERS)
            .map(|producer_id| {
                tokio::spawn(produce_load(
                    client.clone(),
                    producer_id,
                    Arc::clone(ledger),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tasks.push(tokio::spawn(consume_load(
            client.clone(),
            Arc::clone(ledger),
            Arc::clone(&stop),
        )));
        Load { stop, tasks }
    }

    /// Stops the load and waits (bounded) for every delivery to be acknowledged or failed.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("the load did not stop within 60 s")
                .expect("a load task panicked");
        }
    }
}

/// Sends `producer_id:sequence` records in small bursts until stopped; an acknowledgement
/// task notes each record's outcome.
async fn produce_load(
    client: Client,
    producer_id: usize,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
) {
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(50),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config).unwrap();
    let (sender, mut receiver) = mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
    let acknowledgements = tokio::spawn({
        let ledger = Arc::clone(&ledger);
        async move {
            // Deliveries of one partition complete in send order, so awaiting them in turn
            // loses no time.
            while let Some((sequence, delivery)) = receiver.recv().await {
                let outcome = delivery.await;
                let mut ledger = ledger.lock().unwrap();
                match outcome {
                    Ok(written) => {
                        ledger.acknowledged[producer_id].insert(sequence, written.offset);
                    }
                    Err(_) => ledger.failed_deliveries += 1,
                }
            }
        }
    });
    let partition = producer_id as i32 % LOAD_PARTITIONS;
    let mut sequence = ledger.lock().unwrap().next_sequence[producer_id];
    'sending: while !stop.load(Ordering::SeqCst) {
        for _ in 0..10 {
            let record = ProducerRecord::new(LOAD_TOPIC, format!("{producer_id}:{sequence}"))
                .with_partition(partition);
            ledger.lock().unwrap().next_sequence[producer_id] = sequence + 1;
            match producer.send(record).await {
                Ok(delivery) => sender.send((sequence, delivery)).unwrap(),
                Err(error) => {
                    ledger
                        .lock()
                        .unwrap()
                        .violations
                        .push(format!("producer {producer_id}: send failed: {error}"));
                    break 'sending;
                }
            }
            sequence += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sender);
    producer.close().await;
    acknowledgements.await.unwrap();
}

/// Fetches every partition from where the last acknowledged commit left it, notes what it
/// reads, and commits its positions after each poll that returned records.
async fn consume_load(client: Client, ledger: SharedLedger, stop: Arc<AtomicBool>) {
    let admin = Admin::new(client.clone());
    let config = ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        auto_commit: false,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config).unwrap();
    consumer.assign((0..LOAD_PARTITIONS).map(|partition| (LOAD_TOPIC, partition)));
    for partition in 0..LOAD_PARTITIONS {
        let resume = ledger
            .lock()
            .unwrap()
            .commits
            .get(&partition)
            .and_then(|(acknowledged, _)| *acknowledged)
            .unwrap_or(0);
        consumer
            .seek(LOAD_TOPIC, partition, SeekTo::Offset(resume))
            .await
            .unwrap();
    }
    while !stop.load(Ordering::SeqCst) {
        let records = match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => records,
            Err(error @ ClientError::Corrupt { .. }) => {
                ledger
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("consumer: {error}"));
                return;
            }
            Err(_) => {
                // The broker is down or restarting: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        note_consumed(&ledger, &records);
        let mut offsets = Vec::new();
        for partition in 0..LOAD_PARTITIONS {
            if let Ok(position) = consumer.position(LOAD_TOPIC, partition).await {
                offsets.push((TopicPartition::new(LOAD_TOPIC, partition), position));
            }
        }
        commit(&admin, &ledger, &offsets).await;
    }
}

fn note_consumed(ledger: &SharedLedger, records: &[ConsumerRecord]) {
    let mut ledger = ledger.lock().unwrap();
    for record in records {
        let value = record.value.clone().unwrap_or_default();
        let key = (record.partition, record.offset);
        if let Some(earlier) = ledger.consumed.get(&key) {
            if *earlier != value {
                let problem = format!(
                    "partition {} offset {} read as {:?}, earlier as {:?}",
                    record.partition, record.offset, value, earlier
                );
                ledger.violations.push(problem);
            }
        }
        ledger.consumed.insert(key, value);
    }
}

/// Commits `offsets` for the load's group, noting the attempt first and the acknowledgement
/// after; an attempt without an answer in time counts as possibly landed.
async fn commit(admin: &Admin, ledger: &SharedLedger, offsets: &[(TopicPartition, i64)]) {
    {
        let mut ledger = ledger.lock().unwrap();
        for (topic_partition, offset) in offsets {
            let entry = ledger.commits.entry(topic_partition.partition).or_default();
            entry.1.push(*offset);
        }
    }
    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        admin.alter_committed_offsets(LOAD_GROUP, offsets),
    )
    .await;
    if let Ok(Ok(())) = outcome {
        let mut ledger = ledger.lock().unwrap();
        ledger.commits_acknowledged += 1;
        for (topic_partition, offset) in offsets {
            ledger
                .commits
                .insert(topic_partition.partition, (Some(*offset), Vec::new()));
        }
    }
}

/// Reads every record of a partition through the client (which checks every batch's CRC),
/// up to the log end as it is now.
async fn read_partition(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<Vec<ConsumerRecord>, String> {
    let config = ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        auto_commit: false,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config).unwrap();
    consumer.assign([(topic, partition)]);
    consumer
        .seek(topic, partition, SeekTo::Beginning)
        .await
        .map_err(|error| format!("seek: {error}"))?;
    let topic_partition = TopicPartition::new(topic, partition);
    let end = consumer
        .end_offsets(std::slice::from_ref(&topic_partition))
        .await
        .map_err(|error| format!("end offsets: {error}"))?[&topic_partition];
    let started = Instant::now();
    let mut records: Vec<ConsumerRecord> = Vec::new();
    while records.last().map_or(0, |record| record.offset + 1) < end {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{topic_partition}: read {} records in 30 s, log end {end}",
                records.len()
            ));
        }
        let polled = consumer
            .poll(Duration::from_millis(200))
            .await
            .map_err(|error| format!("reading {topic_partition}: {error}"))?;
        records.extend(polled);
    }
    Ok(records)
}

/// Checks the log and the committed offsets against the ledger; returns how many extra
/// copies of records (from retries after lost acknowledgements) the log holds.
async fn verify(
    client: &Client,
    address: SocketAddr,
    ledger: &SharedLedger,
) -> Result<usize, String> {
    let mut logs = BTreeMap::new();
    for partition in 0..LOAD_PARTITIONS {
        let records = read_partition(client, LOAD_TOPIC, partition).await?;
        let end = records.last().map_or(0, |record| record.offset + 1);
        let batches = tokio::task::spawn_blocking(move || batch_bounds(address, partition, end))
            .await
            .unwrap();
        logs.insert(partition, (records, batches));
    }
    let committed = Admin::new(client.clone())
        .committed_offsets(LOAD_GROUP)
        .await
        .map_err(|error| format!("reading committed offsets: {error}"))?;
    let ledger = ledger.lock().unwrap();
    if let Some(problem) = ledger.violations.first() {
        return Err(format!("the load saw: {problem}"));
    }
    let mut duplicates = 0;
    for (&partition, (records, batches)) in &logs {
        // Dense: every offset from 0 to the log end holds a record.
        for (index, record) in records.iter().enumerate() {
            if record.offset != index as i64 {
                return Err(format!(
                    "partition {partition}: offset {} where {index} was due (a hole)",
                    record.offset
                ));
            }
        }
        let parsed = parse_load_records(partition, records, batches)?;
        for producer_id in (0..PRODUCERS).filter(|p| *p as i32 % LOAD_PARTITIONS == partition) {
            duplicates += check_producer(producer_id, &ledger, &parsed)?;
        }
        for (&(consumed_partition, offset), value) in ledger.consumed.range((partition, 0)..) {
            if consumed_partition != partition {
                break;
            }
            let stored = records
                .get(offset as usize)
                .and_then(|record| record.value.as_ref());
            if stored != Some(value) {
                return Err(format!(
                    "partition {partition} offset {offset}: the consumer read {value:?}, the log now holds {stored:?}"
                ));
            }
        }
    }
    check_commits(&ledger, &committed)?;
    Ok(duplicates)
}

/// The `(base offset, next offset)` of every batch of a load partition below `end`, read on
/// the wire (CRCs checked): the client's records do not say which batch they came in.
fn batch_bounds(address: SocketAddr, partition: i32, end: i64) -> Vec<(i64, i64)> {
    let mut connection = RawConnection::connect(address);
    let mut bounds = Vec::new();
    let mut next = 0;
    while next < end {
        let fetched = connection.fetch(LOAD_TOPIC, partition, next, 1 << 20);
        assert_eq!(fetched.error_code, ErrorCode::NONE, "fetch at {next}");
        assert!(!fetched.records.is_empty(), "nothing at {next} below {end}");
        for found in BatchIter::validating(&fetched.records) {
            let header = found.unwrap().header;
            if header.next_offset() <= next {
                continue;
            }
            bounds.push((header.base_offset, header.next_offset()));
            next = header.next_offset();
        }
    }
    bounds
}

/// One record of the load topic: where it is and whose it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoadRecord {
    offset: i64,
    /// The base offset of the batch it came in.
    batch: i64,
    producer: usize,
    sequence: u64,
}

/// Every record of a partition of the load topic, with its batch.
fn parse_load_records(
    partition: i32,
    records: &[ConsumerRecord],
    batches: &[(i64, i64)],
) -> Result<Vec<LoadRecord>, String> {
    let mut bounds = batches.iter().peekable();
    records
        .iter()
        .map(|record| {
            while bounds
                .peek()
                .is_some_and(|(_, next)| *next <= record.offset)
            {
                bounds.next();
            }
            let batch = match bounds.peek() {
                Some(&&(base, _)) if base <= record.offset => base,
                _ => return Err(format!("offset {} in no batch", record.offset)),
            };
            let value = record.value.as_deref().unwrap_or_default();
            let text = std::str::from_utf8(value).unwrap_or("");
            let parsed = text.split_once(':').and_then(|(producer, sequence)| {
                Some((producer.parse().ok()?, sequence.parse().ok()?))
            });
            match parsed {
                Some((producer, sequence)) if producer < PRODUCERS => Ok(LoadRecord {
                    offset: record.offset,
                    batch,
                    producer,
                    sequence,
                }),
                _ => Err(format!(
                    "partition {partition} offset {}: unexpected value {value:?}",
                    record.offset
                )),
            }
        })
        .collect()
}

/// Checks one producer's records in its partition against its acknowledgements. The
/// producer sends a partition's batches in order, a few in flight at a time, and resends
/// those not acknowledged (whole, the same records, in order) until they are or their
/// delivery times out. A resend after a lost acknowledgement may write batches again
/// (at-least-once: the broker's memory of producers' sequences does not survive a restart).
/// So:
///
/// - each acknowledged record is at the offset its acknowledgement gave, in send order;
/// - each batch holds consecutive sequence numbers of one producer, all acknowledged (at
///   these offsets) or none, and two batches' ranges are the same or do not overlap;
/// - a record below the highest sequence seen so far is a copy of one seen before (records
///   first appear in send order), and nothing at or below an acknowledged batch appears
///   after it (acknowledged batches are not resent); nothing unsent appears.
///
/// Returns how many records are extra copies from resends.
fn check_producer(
    producer_id: usize,
    ledger: &Ledger,
    records: &[LoadRecord],
) -> Result<usize, String> {
    let acknowledged = &ledger.acknowledged[producer_id];
    let at: BTreeMap<i64, &LoadRecord> = records
        .iter()
        .map(|record| (record.offset, record))
        .collect();
    let mut previous_offset = -1;
    for (&sequence, &offset) in acknowledged {
        let found = at
            .get(&offset)
            .map(|record| (record.producer, record.sequence));
        if found != Some((producer_id, sequence)) {
            return Err(format!(
                "acknowledged record {producer_id}:{sequence} is not at its offset {offset}: found {found:?}"
            ));
        }
        if offset <= previous_offset {
            return Err(format!(
                "producer {producer_id}: record {sequence} acknowledged at offset {offset}, not after {previous_offset}"
            ));
        }
        previous_offset = offset;
    }
    let mut batches: Vec<Vec<&LoadRecord>> = Vec::new();
    for record in records
        .iter()
        .filter(|record| record.producer == producer_id)
    {
        match batches.last_mut() {
            Some(batch) if batch[0].batch == record.batch => batch.push(record),
            _ => batches.push(vec![record]),
        }
    }
    // Ranges seen so far, by first sequence: last sequence.
    let mut ranges: BTreeMap<u64, u64> = BTreeMap::new();
    let mut highest: Option<u64> = None;
    let mut acknowledged_up_to: Option<u64> = None;
    let mut duplicates = 0;
    for batch in batches {
        let (first, last) = (batch[0].sequence, batch[batch.len() - 1].sequence);
        let base = batch[0].batch;
        let describe =
            || format!("producer {producer_id}'s batch {first}..={last} at offset {base}");
        if last >= ledger.next_sequence[producer_id] {
            return Err(format!("{}: never sent", describe()));
        }
        let consecutive = batch
            .iter()
            .enumerate()
            .all(|(index, record)| record.sequence == first + index as u64);
        let whole = records.iter().filter(|record| record.batch == base).count() == batch.len();
        if !consecutive || !whole {
            return Err(format!(
                "{}: not one run of one producer's records",
                describe()
            ));
        }
        let acked = batch
            .iter()
            .filter(|record| acknowledged.get(&record.sequence) == Some(&record.offset))
            .count();
        if acked != 0 && acked != batch.len() {
            return Err(format!(
                "{}: {acked} of its {} records acknowledged here",
                describe(),
                batch.len()
            ));
        }
        if acknowledged_up_to.is_some_and(|up_to| first <= up_to) {
            return Err(format!(
                "{}: after the acknowledged batch ending at {acknowledged_up_to:?}",
                describe()
            ));
        }
        let overlapping = ranges.range(..=last).next_back();
        let repeat = match overlapping {
            Some((&seen_first, &seen_last)) if seen_last >= first => {
                if (seen_first, seen_last) != (first, last) {
                    return Err(format!(
                        "{}: overlaps the earlier batch {seen_first}..={seen_last}",
                        describe()
                    ));
                }
                true
            }
            _ => false,
        };
        if repeat {
            duplicates += batch.len();
        } else if highest.is_some_and(|highest| first <= highest) {
            return Err(format!(
                "{}: new records below sequence {highest:?}: out of order",
                describe()
            ));
        }
        ranges.insert(first, last);
        highest = highest.max(Some(last));
        if acked != 0 {
            acknowledged_up_to = Some(last);
        }
    }
    Ok(duplicates)
}

/// Every partition's committed offset is its last acknowledged commit, or a commit sent
/// after it whose answer was lost.
fn check_commits(
    ledger: &Ledger,
    committed: &BTreeMap<TopicPartition, mq_client::CommittedOffset>,
) -> Result<(), String> {
    for (&partition, (acknowledged, later)) in &ledger.commits {
        let found = committed
            .get(&TopicPartition::new(LOAD_TOPIC, partition))
            .map(|committed| committed.offset);
        let allowed = found
            .is_some_and(|found| Some(found) == *acknowledged || later.contains(&found))
            || (found.is_none() && acknowledged.is_none());
        if !allowed {
            return Err(format!(
                "partition {partition}: committed offset {found:?}, but the last acknowledged commit was {acknowledged:?} (later attempts {later:?})"
            ));
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Torn and damaged files

const TORN_TOPIC: &str = "torn";
const TORN_BATCHES: usize = 40;
const RECORDS_PER_BATCH: usize = 5;

fn torn_value(batch: usize, record: usize) -> String {
    format!("{batch:04}-{record}-{}", "x".repeat(200))
}

/// A broker with one partition of `TORN_BATCHES` acknowledged batches of about 1 KiB each
/// (so that the offset index, one entry per 4 KiB, has entries); returns each batch's size.
fn broker_with_batches() -> (BrokerProcess, Vec<usize>) {
    let broker = BrokerProcess::start();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(connection.create_topic(TORN_TOPIC, 1, &[]), ErrorCode::NONE);
    let mut sizes = Vec::new();
    for batch in 0..TORN_BATCHES {
        let values: Vec<String> = (0..RECORDS_PER_BATCH)
            .map(|record| torn_value(batch, record))
            .collect();
        let bytes = batch_of(&values);
        assert_eq!(
            connection.produce(TORN_TOPIC, 0, &bytes, -1),
            (ErrorCode::NONE, (batch * RECORDS_PER_BATCH) as i64)
        );
        sizes.push(bytes.len());
    }
    (broker, sizes)
}

fn segment_file(broker: &BrokerProcess, extension: &str) -> PathBuf {
    broker
        .partition_dir(TORN_TOPIC, 0)
        .join(format!("{:020}.{extension}", 0))
}

/// Checks a restarted broker holds exactly the first `kept` batches, intact and indexed, and
/// appends after them.
fn check_recovered(broker: &BrokerProcess, sizes: &[usize], kept: usize) {
    let mut connection = RawConnection::connect(broker.address);
    let end = (kept * RECORDS_PER_BATCH) as i64;
    assert_eq!(
        connection.log_end(TORN_TOPIC, 0),
        end,
        "log end after recovery"
    );
    assert_eq!(
        fs::metadata(segment_file(broker, "log")).unwrap().len(),
        sizes[..kept].iter().sum::<usize>() as u64,
        "the .log ends at the last valid batch"
    );
    // Everything before the damage reads back, batch by batch, CRCs checked.
    let fetched = connection.fetch(TORN_TOPIC, 0, 0, 1 << 20);
    assert_eq!(fetched.error_code, ErrorCode::NONE);
    assert_eq!(fetched.high_watermark, end);
    let mut batches = 0;
    for (index, found) in BatchIter::validating(&fetched.records).enumerate() {
        let found = found.unwrap_or_else(|error| panic!("batch {index}: {error}"));
        assert_eq!(found.header.base_offset, (index * RECORDS_PER_BATCH) as i64);
        let batch = fetched
            .records
            .slice(found.position..found.position + found.header.total_bytes());
        let values: Vec<Bytes> = records(&batch)
            .unwrap()
            .map(|record| record.unwrap().into_record().value.unwrap())
            .collect();
        let expected: Vec<Bytes> = (0..RECORDS_PER_BATCH)
            .map(|record| Bytes::from(torn_value(index, record)))
            .collect();
        assert_eq!(values, expected, "batch {index}");
        batches += 1;
    }
    assert_eq!(batches, kept, "batches read back");
    // The index is rebuilt: every entry points at the start of the batch it names, and a
    // fetch from the middle starts at the batch holding the offset.
    check_offset_index(&segment_file(broker, "index"), sizes, kept);
    let middle_batch = kept / 2;
    let middle = (middle_batch * RECORDS_PER_BATCH + 2) as i64;
    let fetched = connection.fetch(TORN_TOPIC, 0, middle, 4096);
    let first = BatchIter::validating(&fetched.records)
        .next()
        .expect("a batch from the middle")
        .unwrap();
    assert_eq!(
        first.header.base_offset,
        (middle_batch * RECORDS_PER_BATCH) as i64
    );
    assert_eq!(
        connection.fetch(TORN_TOPIC, 0, end + 1, 4096).error_code,
        ErrorCode::OFFSET_OUT_OF_RANGE,
        "nothing readable past the recovered end"
    );
    // New records continue the offsets.
    assert_eq!(
        connection.produce(TORN_TOPIC, 0, &batch_of(&["after"]), -1),
        (ErrorCode::NONE, end)
    );
    let fetched = connection.fetch(TORN_TOPIC, 0, end, 4096);
    let appended = BatchIter::validating(&fetched.records)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(appended.header.base_offset, end);
}

/// Checks the entries of an offset index file (8 bytes: relative offset, position; zeros
/// after the last) against the batches' positions.
fn check_offset_index(path: &Path, sizes: &[usize], kept: usize) {
    let mut starts = BTreeMap::new();
    let mut position = 0;
    for (batch, size) in sizes[..kept].iter().enumerate() {
        starts.insert(position as u32, (batch * RECORDS_PER_BATCH) as u32);
        position += size;
    }
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    let mut entries = 0;
    for entry in bytes.chunks_exact(8) {
        let relative_offset = u32::from_be_bytes(entry[..4].try_into().unwrap());
        let position = u32::from_be_bytes(entry[4..].try_into().unwrap());
        if position == 0 {
            break;
        }
        assert_eq!(
            starts.get(&position),
            Some(&relative_offset),
            "index entry ({relative_offset}, {position}) does not name a batch start"
        );
        entries += 1;
    }
    assert!(
        entries >= 2,
        "only {entries} index entries for {kept} batches of about 1 KiB"
    );
}

fn overwrite(path: &Path, position: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(position)).unwrap();
    file.write_all(bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn recovery_cuts_a_torn_tail_and_rebuilds_a_garbage_index() {
    let (mut broker, sizes) = broker_with_batches();
    broker.kill9();
    // The last batch lost its final bytes (a write cut short), and the index is garbage.
    let log = segment_file(&broker, "log");
    let len = fs::metadata(&log).unwrap().len();
    set_len(&log, len - 7);
    let mut rng = Rng::new(7);
    overwrite(&segment_file(&broker, "index"), 0, &rng.bytes(4096));
    broker.restart();
    check_recovered(&broker, &sizes, TORN_BATCHES - 1);
    assert!(broker.log().contains("truncated torn tail during recovery"));
}

#[test]
fn recovery_drops_a_last_batch_with_a_bad_crc_and_rebuilds_missing_indexes() {
    let (mut broker, sizes) = broker_with_batches();
    broker.kill9();
    // One byte of the last batch's records changed: whole, but its CRC does not match. The
    // offset index is cut mid-entry and the time index is gone.
    let last_start: usize = sizes[..TORN_BATCHES - 1].iter().sum();
    let log = segment_file(&broker, "log");
    let mut byte = [0u8];
    let mut file = File::open(&log).unwrap();
    file.seek(SeekFrom::Start(last_start as u64 + 100)).unwrap();
    file.read_exact(&mut byte).unwrap();
    overwrite(&log, last_start as u64 + 100, &[byte[0] ^ 0x20]);
    set_len(&segment_file(&broker, "index"), 3);
    fs::remove_file(segment_file(&broker, "timeindex")).unwrap();
    broker.restart();
    check_recovered(&broker, &sizes, TORN_BATCHES - 1);
    assert!(broker.log().contains("truncated torn tail during recovery"));
}

#[test]
fn damaged_indexes_after_a_clean_shutdown_are_rebuilt() {
    let (mut broker, sizes) = broker_with_batches();
    assert!(broker.terminate().success());
    // A clean shutdown trims the indexes to their entries; reverse the offset index's entries
    // (they no longer increase) and cut the time index mid-entry.
    let index = segment_file(&broker, "index");
    let mut entries = Vec::new();
    File::open(&index)
        .unwrap()
        .read_to_end(&mut entries)
        .unwrap();
    assert!(entries.len() >= 16, "the index has entries");
    let reversed: Vec<u8> = entries.chunks_exact(8).rev().flatten().copied().collect();
    fs::write(&index, reversed).unwrap();
    set_len(&segment_file(&broker, "timeindex"), 5);
    broker.restart();
    check_recovered(&broker, &sizes, TORN_BATCHES);
    assert!(
        broker.log().contains("rebuilding"),
        "the damage was noticed: {}",
        broker.log()
    );
}

// -------------------------------------------------------------------------------------------
// Disk full

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    /// The mount point.
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) at `path`; `None` (after saying why) when
    /// that is not possible here (not root, no mount permission in a container).
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(1))
            == Some("0");
        if !root {
            eprintln!("skipping: mounting a tmpfs needs root");
            return None;
        }
        fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            Ok(output) => {
                eprintln!(
                    "skipping: mount failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipping: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds it open; detach it so it goes once released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    // A short write leaves less than a chunk; fill that with single pages.
    let page = [0x5Au8; 4096];
    while let Ok(written) = file.write(&page) {
        if written == 0 {
            break;
        }
    }
    fs::metadata(path).unwrap().len()
}

/// Reads a partition from offset 0 to its log end on the wire, checking every batch (CRC,
/// offsets continuing without a gap); returns the records read.
fn read_dense(connection: &mut RawConnection, topic: &str, end: i64) -> i64 {
    let mut next = 0;
    while next < end {
        let fetched = connection.fetch(topic, 0, next, 256 * 1024);
        assert_eq!(
            fetched.error_code,
            ErrorCode::NONE,
            "fetch at {next}: log start {}, high watermark {}",
            fetched.log_start_offset,
            fetched.high_watermark
        );
        assert!(!fetched.records.is_empty(), "nothing at {next} below {end}");
        for found in BatchIter::validating(&fetched.records) {
            let found = found.unwrap_or_else(|error| panic!("batch after {next}: {error}"));
            assert_eq!(found.header.base_offset, next, "offsets continue");
            next = found.header.next_offset();
        }
    }
    assert_eq!(next, end, "batches end at the log end");
    next
}

fn log_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .map(|path| fs::metadata(path).unwrap().len())
        .sum()
}

#[test]
fn a_full_disk_refuses_produces_cleanly_and_recovers_when_space_is_freed() {
    // Goal: when the data directory's file system fills up, producers get
    // KAFKA_STORAGE_ERROR, nothing partial stays on disk, reads go on, and once space is
    // freed produces continue at the next offset. Method: a small tmpfs holding the data
    // directory and a filler file the test deletes to free space; small segments, so that
    // segments roll while the disk fills.
    let temp = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&temp.path().join("small"), "8m") else {
        return;
    };
    let filler = tmpfs.path.join("filler");
    fs::write(&filler, vec![0xA5u8; 3 << 20]).unwrap();
    let mut broker = BrokerProcess::start_in(&tmpfs.path.join("data"), &[]);
    let mut connection = RawConnection::connect(broker.address);
    // The records' timestamps are from 2023: keep them from retention by age.
    let topic_configs = [
        ("segment_bytes", "1048576"),
        ("max_message_bytes", "65536"),
        ("retention_ms", "-1"),
    ];
    assert_eq!(
        connection.create_topic("full", 1, &topic_configs),
        ErrorCode::NONE
    );
    let values: Vec<String> = (0..8)
        .map(|record| format!("{record}{}", "v".repeat(1000)))
        .collect();
    let batch = batch_of(&values);
    let mut end = 0i64;
    let mut stored_bytes = 0u64;
    let mut refused = None;
    for _ in 0..2000 {
        match connection.produce("full", 0, &batch, -1) {
            (ErrorCode::NONE, base_offset) => {
                assert_eq!(base_offset, end, "offsets stay dense");
                end += values.len() as i64;
                stored_bytes += batch.len() as u64;
            }
            (code, _) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(ErrorCode::KAFKA_STORAGE_ERROR),
        "8 MiB filled up with {end} records"
    );
    assert!(end > 0, "some records fit before the disk was full");
    // Refused again, with either acks, and nothing partial stays behind.
    for acks in [-1, 1, -1] {
        assert_eq!(
            connection.produce("full", 0, &batch, acks).0,
            ErrorCode::KAFKA_STORAGE_ERROR
        );
    }
    let partition_dir = broker.partition_dir("full", 0);
    assert_eq!(
        log_bytes(&partition_dir),
        stored_bytes,
        "no partial batch on disk"
    );
    // Still up, still serving what it stored.
    assert!(broker.is_running(), "the broker died: {}", broker.log());
    let mut other = RawConnection::connect(broker.address);
    assert_eq!(
        other.call(9, &Request::ApiVersions).0.error_code,
        ErrorCode::NONE
    );
    assert_eq!(other.log_end("full", 0), end);
    read_dense(&mut other, "full", end);
    // Space freed: produces continue at the next offset.
    fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        assert_eq!(
            connection.produce("full", 0, &batch, -1),
            (ErrorCode::NONE, end)
        );
        end += values.len() as i64;
        stored_bytes += batch.len() as u64;
    }
    read_dense(&mut other, "full", end);
    assert_eq!(log_bytes(&partition_dir), stored_bytes);
    // And a crash finds nothing torn to cut.
    broker.kill9();
    broker.restart();
    let mut connection = RawConnection::connect(broker.address);
    assert_eq!(connection.log_end("full", 0), end);
    read_dense(&mut connection, "full", end);
    assert!(
        !broker.log().contains("truncated torn tail"),
        "{}",
        broker.log()
    );
    drop(broker);
}

#[test]
fn a_disk_full_at_an_index_page_boundary_does_not_crash_the_broker() {
    // Goal: index files are preallocated sparse and written through a memory map; when the
    // disk is full, a store into a page that has no block yet would raise SIGBUS and kill
    // the broker. Method: for a few exact amounts of free space (whole pages, made by filling
    // the tmpfs and then shortening the filler), write to a fresh partition a batch that
    // takes the free pages and a small one that fits in the slack of the log's last page but
    // is due the partition's first index entry. Each answer must be a success or
    // KAFKA_STORAGE_ERROR, the broker must stay up, and the log must read back dense.
    let temp = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&temp.path().join("small"), "4m") else {
        return;
    };
    let mut broker = BrokerProcess::start_in(&tmpfs.path.join("data"), &[]);
    let mut connection = RawConnection::connect(broker.address);
    let filler = tmpfs.path.join("filler");
    let page = 4096u64;
    for free_pages in 0..5u64 {
        let topic = format!("edge{free_pages}");
        assert_eq!(
            connection.create_topic(&topic, 1, &[("retention_ms", "-1")]),
            ErrorCode::NONE
        );
        let filled = fill(&filler);
        set_len(&filler, filled.saturating_sub(free_pages * page));
        // Two pages and a bit: the first index entry is due at the next batch.
        let big = batch_of(&["b".repeat(2 * 4096 + 500)]);
        let small = batch_of(&["s"]);
        let mut end = 0;
        for records in [&big, &small, &small] {
            let answer = connection.try_produce(&topic, 0, records, -1);
            assert!(
                broker.is_running(),
                "the broker died ({:?}) with {free_pages} free pages: {}",
                broker.exit_status(),
                broker.log()
            );
            match answer.expect("an answer from a running broker") {
                (ErrorCode::NONE, base_offset) => {
                    assert_eq!(base_offset, end);
                    end += 1;
                }
                (code, _) => assert_eq!(code, ErrorCode::KAFKA_STORAGE_ERROR),
            }
        }
        assert_eq!(connection.log_end(&topic, 0), end);
        read_dense(&mut connection, &topic, end);
        fs::remove_file(&filler).unwrap();
    }
    drop(broker);
}
