//! Fault tests: real `bridge serve` processes sharing the test database, under a steady load of
//! sends, while something fails (a node is killed with SIGKILL). Each stops by itself. The long
//! versions (more nodes, more load, longer outages) are `ops/faults`.

use crate::common::pg_cluster::PgCluster;
use crate::common::{serve_process, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TTL_SECS: u64 = 3;

/// `ops/faults` runs these tests long (BRIDGE_FAULTS_LONG=1): more load after each fault, longer
/// outages. The quick versions run with the rest of the suite.
fn scale() -> usize {
    if std::env::var_os("BRIDGE_FAULTS_LONG").is_some() {
        10
    } else {
        1
    }
}
const WAIT: Duration = Duration::from_secs(30);

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Settings of every node in these tests: a short lease, quick pacing.
fn node_env(node: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("BRIDGE_NODE_ID", node.to_owned()),
        ("BRIDGE_LINE_LEASE_SECS", TTL_SECS.to_string()),
        ("BRIDGE_LINE_SEND_INTERVAL_MS", "50".into()),
        ("BRIDGE_LINE_SEND_JITTER_MS", "0".into()),
        ("BRIDGE_SIM_DELIVERED_AFTER_MS", "20".into()),
        ("BRIDGE_LOG", "info,sqlx=warn".into()),
    ]
}

async fn start(db: &TestDb, node: &'static str) -> (tokio::process::Child, String, std::path::PathBuf) {
    let env = node_env(node);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serve_process(db, &env).await
}

/// Sends, one after another, to whichever node answers: a request that fails (the node is dead,
/// or died mid-request) goes to the next node under the same Idempotency-Key, as a client
/// behind a load balancer would retry. Returns the accepted message ids.
struct Load {
    accepted: Arc<Mutex<Vec<String>>>,
    /// The 503 answers seen (body, Retry-After).
    unavailable: Arc<Mutex<Vec<(Value, String)>>>,
    /// How many were accepted and how many answers were 503, as they change.
    counts: tokio::sync::watch::Receiver<Counts>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    accepted: usize,
    unavailable: usize,
}

impl Load {
    fn start(bases: Vec<String>, key: String, lines: Vec<String>) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let unavailable = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (out, stopping, refused) = (accepted.clone(), stop.clone(), unavailable.clone());
        let (counted, counts) = tokio::sync::watch::channel(Counts::default());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut node = 0;
            for i in 0.. {
                if stopping.is_cancelled() {
                    return;
                }
                let body = json!({"line_id": lines[i % lines.len()], "to": "+34699000900", "message": format!("load {i}")});
                let idempotency_key = format!("load-{i}");
                loop {
                    node = (node + 1) % bases.len();
                    let sent = http
                        .post(format!("{}/v1/messages/send", bases[node]))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", &idempotency_key)
                        .json(&body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let sent: Value = r.json().await.unwrap();
                            out.lock().unwrap().push(sent["message_id"].as_str().unwrap().to_owned());
                            counted.send_modify(|c| c.accepted += 1);
                            break;
                        }
                        // The client under test honours Retry-After, as the published API asks:
                        // it waits that long before the same request again (the load's
                        // behaviour, not the test waiting for a condition).
                        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                            let retry_after =
                                r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                            let wait = Duration::from_secs(retry_after.parse().unwrap_or(1));
                            let body: Value = r.json().await.unwrap();
                            refused.lock().unwrap().push((body, retry_after));
                            counted.send_modify(|c| c.unavailable += 1);
                            tokio::time::sleep(wait).await;
                        }
                        Ok(r) if r.status().is_server_error() => {}
                        Ok(r) => panic!("a send was refused: {} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(_) => {}
                    }
                    if stopping.is_cancelled() {
                        return;
                    }
                }
            }
        });
        Self { accepted, unavailable, counts, stop, task }
    }

    fn accepted(&self) -> usize {
        self.counts.borrow().accepted
    }

    /// Await `done` of the counts (the load's own progress, told as it happens).
    async fn until(&self, what: &str, timeout: Duration, done: impl Fn(Counts) -> bool) {
        let mut counts = self.counts.clone();
        tokio::time::timeout(timeout, counts.wait_for(|c| done(*c)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
            .expect("the load runs");
    }

    fn unavailable(&self) -> Vec<(Value, String)> {
        self.unavailable.lock().unwrap().clone()
    }

    async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        self.task.await.unwrap();
        let accepted = self.accepted.lock().unwrap().clone();
        accepted
    }
}

/// Each node's unexpired leases.
async fn owners(db: &TestDb) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT owner, line_id FROM line_leases WHERE expires_at > now() ORDER BY owner, line_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (owner, line) in rows {
        out.entry(owner).or_default().push(line);
    }
    out
}

#[tokio::test]
async fn three_nodes_under_load_one_killed_lose_nothing_send_nothing_twice_and_its_lines_resume_elsewhere() {
    let db = TestDb::new().await;
    let (_, key) = crate::common::account_on(&db.url, "business").await;
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        nodes.push((node, start(&db, node).await));
    }
    let bases: Vec<String> = nodes.iter().map(|(_, (_, base, _))| base.clone()).collect();
    let lines = crate::common::sim_lines(&bases, &key, 9, "+3460000090").await;
    db.await_condition("the three nodes see each other", Duration::from_secs(20), || async {
        count(&db, &format!("SELECT count(*) FROM nodes WHERE heartbeat_at > now() - interval '{TTL_SECS} seconds'")).await == 3
    })
    .await;

    let load = Load::start(bases.clone(), key.clone(), lines.clone());
    db.await_condition("the lines are served and sends flow", Duration::from_secs(30), || async {
        load.accepted() >= 30 && owners(&db).await.values().map(Vec::len).sum::<usize>() == lines.len()
    })
    .await;
    // Kill the node holding the most lines, mid-load.
    let held = owners(&db).await;
    let (victim, victim_lines) = held.iter().max_by_key(|(_, lines)| lines.len()).map(|(n, l)| (n.clone(), l.clone())).unwrap();
    let index = nodes.iter().position(|(n, _)| *n == victim).unwrap();
    let (_, (mut child, _, log)) = nodes.remove(index);
    child.start_kill().unwrap();
    let killed_at = Instant::now();
    child.wait().await.unwrap();
    let accepted_at_kill = load.accepted();

    // Its lines are taken by the others once its lease runs out, and their queues move again.
    let victim_set: HashSet<String> = victim_lines.iter().cloned().collect();
    db.await_condition("the dead node's lines are served elsewhere", Duration::from_secs(10 * TTL_SECS), || async {
        let now = owners(&db).await;
        let taken: usize =
            now.iter().filter(|(n, _)| **n != victim).map(|(_, l)| l.iter().filter(|l| victim_set.contains(*l)).count()).sum();
        taken == victim_set.len()
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!(
        "failover: {} line(s) of {victim} owned again {:.2} s after its kill (lease TTL {TTL_SECS} s)",
        victim_set.len(),
        failover.as_secs_f64()
    );
    load.until("sends go on after the kill", Duration::from_secs(30), |c| c.accepted >= accepted_at_kill + 30 * scale()).await;
    let accepted = load.stop().await;

    let all_sent = db
        .condition_within(Duration::from_secs(60), || async {
            count(&db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await >= accepted.len() as i64
        })
        .await;
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(all_sent, "not every accepted message was sent; the killed node's log:\n{}", log_tail());
    assert_sent_exactly_once(&db.pool, &accepted).await;
    for (_, (mut child, _, _)) in nodes {
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }
}

/// Every accepted message was sent exactly once, under one WhatsApp id, and reached the network
/// once; nothing else was sent.
async fn assert_sent_exactly_once(pool: &sqlx::PgPool, accepted: &[String]) {
    let sent: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT stream_id, count(*) FILTER (WHERE event_type = 'message.sent'), \
                count(DISTINCT payload->>'engine_message_id') FILTER (WHERE event_type = 'message.dispatch_started') \
           FROM events WHERE stream_type = 'message' AND event_type IN ('message.sent', 'message.dispatch_started') \
          GROUP BY stream_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    assert_eq!(accepted_set.len(), accepted.len(), "a retried request was answered with the same message, not a second one");
    for (message_id, sent_events, engine_ids) in &sent {
        assert!(accepted_set.contains(message_id.as_str()), "{message_id} was sent but never accepted");
        assert_eq!((*sent_events, *engine_ids), (1, 1), "{message_id}: sent once, under one WhatsApp id");
    }
    assert_eq!(sent.len(), accepted.len(), "every accepted message was sent");
    let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM sim_deliveries").fetch_one(pool).await.unwrap();
    assert_eq!(delivered, accepted.len() as i64, "each reached the network once");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM dispatch_queue").fetch_one(pool).await.unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_the_nodes_answer_503_retryable_recover_by_themselves_and_lose_nothing() {
    let cluster = PgCluster::primary().await;
    let url = cluster.url("bridge");
    let migrated = crate::common::bridge_on(&url).args(["migrate"]).output().await.unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let (_, key) = crate::common::account_on(&url, "business").await;
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        let mut env = node_env(node);
        // Requests wait for a connection at most this long while the database is away.
        env.push(("BRIDGE_DATABASE__ACQUIRE_TIMEOUT_MS", "1000".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(crate::common::serve_process_on(&url, &env).await);
    }
    let bases: Vec<String> = nodes.iter().map(|(_, base, _)| base.clone()).collect();
    let http = reqwest::Client::new();
    let lines = crate::common::sim_lines(&bases, &key, 4, "+3460000095").await;
    let load = Load::start(bases.clone(), key.clone(), lines.clone());
    load.until("sends flow", Duration::from_secs(30), |c| c.accepted >= 20).await;

    // The restart: every connection is cut, and for a while nothing answers.
    tokio::task::block_in_place(|| cluster.stop());
    load.until("a send is answered 503 while the database is away", Duration::from_secs(30), |c| c.unavailable > 0).await;
    let ready = http.get(format!("{}/readyz", bases[0])).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "not ready while the database is away");
    let ready: Value = ready.json().await.unwrap();
    assert!(ready["checks"]["database"].as_str().unwrap().starts_with("unreachable"), "{ready}");
    let health = http.get(format!("{}/healthz", bases[0])).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process lives");
    let accepted_while_down = load.accepted();
    if scale() > 1 {
        // The long version keeps the database away for a while: clients keep getting 503s.
        let refused = load.unavailable().len();
        load.until("more 503s while the database stays away", Duration::from_secs(60), |c| {
            c.unavailable >= refused + 2 * scale()
        })
        .await;
    }
    tokio::task::block_in_place(|| cluster.start());

    // Back by themselves: sends are accepted and sent again, nothing was lost.
    load.until("sends are accepted again", Duration::from_secs(60), |c| c.accepted >= accepted_while_down + 20 * scale()).await;
    let (body, retry_after) = load.unavailable()[0].clone();
    let accepted = load.stop().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    crate::common::await_condition_on(&pool, "every accepted message is sent", Duration::from_secs(60), || async {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'message.sent'").fetch_one(&pool).await.unwrap();
        sent >= accepted.len() as i64
    })
    .await;
    assert_sent_exactly_once(&pool, &accepted).await;
    assert_eq!(retry_after, "1");
    insta::assert_json_snapshot!("database_away", body);
    for (mut child, _, _) in nodes {
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }
}

#[tokio::test]
async fn a_webhook_receiver_down_for_a_long_stretch_gets_every_event_in_per_line_order_once_back() {
    use crate::common::receiver::{Receiver, Reply};
    let receiver = Receiver::start().await;
    // Down: every delivery fails, and is retried on a (quick) schedule.
    receiver.set_default(Reply::Status(503));
    let app = crate::common::TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.webhooks.retry_schedule_ms = vec![100, 200, 300, 300, 300, 300, 300, 300, 300, 300, 300, 300];
        c.webhooks.retry_jitter = 0.0;
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 20;
        c.sim_read_after_ms = 40;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let (status, hook) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let mut lines = Vec::new();
    for i in 0..2 {
        lines.push(app.connected_line(&key, &format!("+3460000098{i}")).await);
    }
    for i in 0..5 * scale() {
        for line in &lines {
            let (status, sent) = app
                .post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000980", "message": format!("m{i}")}))
                .await;
            assert_eq!(status, StatusCode::OK, "{sent}");
        }
    }
    // Every message is sent, delivered and read, and every lane's first delivery has failed
    // three times: the receiver has been down for a while.
    app.eventually("the events are all made and the lanes have failed repeatedly", WAIT, || async {
        let read = count(&app.db, "SELECT count(*) FROM events WHERE event_type = 'message.read'").await;
        let failing = count(
            &app.db,
            &format!("SELECT count(DISTINCT line_key) FROM webhook_deliveries WHERE attempts >= {}", 3 * scale().min(3)),
        )
        .await;
        read == 10 * scale() as i64 && failing == 2
    })
    .await;
    assert_eq!(count(&app.db, "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'").await, 0);

    // Back.
    receiver.set_default(Reply::Status(200));
    app.eventually("every event's delivery is made and delivered", WAIT, || async {
        // The projector has made the deliveries of every event in the log,
        let projected = count(
            &app.db,
            "SELECT count(*) FROM projection_checkpoints WHERE name = 'webhook_deliveries' \
                AND global_position >= (SELECT max(global_position) FROM events)",
        )
        .await
            == 1;
        // and each is delivered.
        let made = count(&app.db, "SELECT count(*) FROM webhook_deliveries").await;
        projected && made > 0 && count(&app.db, "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'").await == made
    })
    .await;
    // Per line, the receiver first saw each delivery in the log's order: a delivery is never
    // sent before the one ahead of it on its line was delivered.
    let expected: Vec<(String, String)> =
        sqlx::query_as("SELECT line_key, delivery_id FROM webhook_deliveries ORDER BY line_key, seq")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let mut seen = HashSet::new();
    let mut first_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let line_of: BTreeMap<&str, &str> = expected.iter().map(|(line, d)| (d.as_str(), line.as_str())).collect();
    for request in receiver.requests() {
        let delivery = request.header("x-wazion-bridge-delivery").to_owned();
        if seen.insert(delivery.clone()) {
            first_seen.entry(line_of[delivery.as_str()].to_owned()).or_default().push(delivery);
        }
    }
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (line, delivery) in &expected {
        want.entry(line.clone()).or_default().push(delivery.clone());
    }
    assert_eq!(first_seen, want, "every event reached the receiver, in its line's order");
    // 30 events of messages (sent, delivered, read) and the lines' own.
    assert!(expected.len() >= 30, "{}", expected.len());
    app.shutdown().await;
}

/// What this process's metrics say of `series` (0 when absent).
fn metric(series: &str) -> f64 {
    let mut text = String::new();
    wazion_bridge::metrics::global().render(&mut text);
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' '))).map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_node_cut_off_from_the_database_stops_sending_before_its_lease_can_be_taken() {
    use crate::common::partition::Partition;
    use std::str::FromStr;
    let quick = |c: &mut wazion_bridge::config::Config| {
        c.line_lease_secs = 5;
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 20;
    };
    // The API on one node; sending on node-a, whose every connection crosses the partition.
    let app = crate::common::TestApp::spawn_with(|c| {
        quick(c);
        c.roles = vec!["api".into(), "projections".into()];
    })
    .await;
    let direct = sqlx::postgres::PgConnectOptions::from_str(&app.db.url).unwrap();
    let partition = Partition::to(format!("{}:{}", direct.get_host(), direct.get_port()).parse().unwrap()).await;
    let across = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(direct.clone().host("127.0.0.1").port(partition.addr.port()))
        .await
        .unwrap();
    let (node_a, _) = crate::common::node_on(&across, |c| {
        quick(c);
        c.node_id = "node-a".into();
        c.roles = vec!["dispatch".into()];
    })
    .await;

    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000990").await;
    // The network holds node-a's send (it hangs), so it is mid-send when the partition comes.
    sqlx::query("INSERT INTO sim_faults (line_id, mode) VALUES ($1, 'hang')").bind(&line).execute(&app.db.pool).await.unwrap();
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000990", "message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    app.eventually("node-a starts the send", WAIT, || async {
        count(
            &app.db,
            &format!("SELECT count(*) FROM events WHERE stream_id = '{message_id}' AND event_type = 'message.dispatch_started'"),
        )
        .await
            == 1
    })
    .await;
    assert_eq!(count(&app.db, "SELECT count(*) FROM line_leases WHERE owner = 'node-a'").await, 1);

    partition.cut();
    // Another dispatch node, with a working connection, waits for the line.
    let (node_b, _) = crate::common::node_on(&app.db.pool, |c| {
        quick(c);
        c.node_id = "node-b".into();
        c.roles = vec!["dispatch".into()];
    })
    .await;
    // node-a gives the send up on its own, while its lease in the database still stands: nobody
    // else could have sent the message yet.
    app.eventually("node-a abandons the send", WAIT, || async {
        metric(r#"bridge_dispatch_sends_total{node="node-a",outcome="abandoned"}"#) == 1.0
    })
    .await;
    let still_a: i64 = count(
        &app.db,
        &format!("SELECT count(*) FROM line_leases WHERE line_id = '{line}' AND owner = 'node-a' AND expires_at > now()"),
    )
    .await;
    assert_eq!(still_a, 1, "node-a stopped before its lease ran out");

    // The network works again; node-b takes the line once node-a's lease has run out and sends
    // the message, once, under the WhatsApp id node-a had announced.
    sqlx::query("DELETE FROM sim_faults").execute(&app.db.pool).await.unwrap();
    app.eventually("node-b sends the message", WAIT, || async {
        count(&app.db, &format!("SELECT count(*) FROM events WHERE stream_id = '{message_id}' AND event_type = 'message.sent'"))
            .await
            == 1
    })
    .await;
    assert_eq!(
        count(&app.db, &format!("SELECT count(*) FROM line_leases WHERE line_id = '{line}' AND owner = 'node-b'")).await,
        1
    );
    assert_eq!(count(&app.db, "SELECT count(*) FROM sim_deliveries").await, 1, "the message reached the network once");
    let engine_ids = count(
        &app.db,
        &format!("SELECT count(DISTINCT payload->>'engine_message_id') FROM events WHERE stream_id = '{message_id}' AND event_type = 'message.dispatch_started'"),
    )
    .await;
    assert_eq!(engine_ids, 1, "one WhatsApp id across both attempts");
    node_b.shutdown().await;
    // node-a is still cut off: it is left to the end of the test (its database is dropped).
    std::mem::forget(node_a);
    app.shutdown().await;
}
