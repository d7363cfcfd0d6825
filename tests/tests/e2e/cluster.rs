//! The production NATS shape: three clustered nats-servers, R3 streams, every service
//! started at the same moment against a cluster that has only just elected its leader.
//! Declaring streams and consumers then races other services and a settling cluster;
//! the services must ride that out and serve.

use coachwire_shared::ids::ConversationId;
use coachwire_shared::subjects::{DEAD_LETTER_STREAM, MESSAGES_STREAM, PERSISTED_STREAM};
use coachwire_testkit::db::TestDb;
use coachwire_testkit::js::{Client, Driver};
use coachwire_testkit::nats_cluster::{NODES, NatsCluster};
use coachwire_testkit::stack::{JWT_SECRET, LOG_FILTER, Service, new_user, token};
use serde_json::json;
use std::time::Duration;

/// Longer than the services' declaration patience (45 s), so a service that gives up
/// shows as an exit, not as a test timeout.
const READY_WAIT: Duration = Duration::from_secs(75);

/// Spawns the three services at once, all pointed at every node of `cluster`.
async fn spawn_all(db: &TestDb, cluster: &NatsCluster) -> anyhow::Result<Vec<Service>> {
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", cluster.urls()),
        ("COACHWIRE_JWT_SECRET", JWT_SECRET.to_string()),
        ("COACHWIRE_STREAM_REPLICAS", "3".to_string()),
        ("COACHWIRE_LOG_FORMAT", "json".to_string()),
        ("RUST_LOG", LOG_FILTER.to_string()),
        ("COACHWIRE_CONNECTION_LIMIT", "0".to_string()),
        ("COACHWIRE_MESSAGE_LIMIT", "0".to_string()),
    ]
    .map(|(key, value)| (key.to_string(), value));
    let mut services = Vec::new();
    for name in [
        "coachwire-ingest",
        "coachwire-persister",
        "coachwire-fanout",
    ] {
        services.push(Service::spawn(name, &env).await?);
    }
    Ok(services)
}

/// Starts them and waits until every one is ready (its own process bound its ports and
/// answers `/readyz`); fails as soon as one exits instead.
async fn start_all(db: &TestDb, cluster: &NatsCluster) -> Vec<Service> {
    let mut services = spawn_all(db, cluster)
        .await
        .expect("spawn (build the workspace first)");
    let waits = services
        .iter_mut()
        .map(|s| s.wait_bound_and_ready(READY_WAIT));
    for result in futures::future::join_all(waits).await {
        result.expect("service ready");
    }
    services
}

#[tokio::test]
async fn services_started_together_on_a_fresh_cluster_all_become_ready_with_three_replicas() {
    let db = TestDb::new().await.expect("db");
    let cluster = NatsCluster::start().await.expect("cluster");
    let mut services = start_all(&db, &cluster).await;

    let client = async_nats::connect(cluster.urls().split(',').collect::<Vec<_>>())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    for name in [MESSAGES_STREAM, PERSISTED_STREAM, DEAD_LETTER_STREAM] {
        let mut stream = js.get_stream(name).await.expect("stream exists");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
        assert_eq!(peers, 2, "{name} has a leader and two followers: {info:?}");
    }
    for service in &mut services {
        assert!(service.is_running(), "{} still runs", service.name);
    }
}

#[tokio::test]
async fn on_the_cluster_a_message_is_acked_stored_and_delivered() {
    let db = TestDb::new().await.expect("db");
    let cluster = NatsCluster::start().await.expect("cluster");
    let services = start_all(&db, &cluster).await;
    let ingest = services[0].url();

    let driver = Driver::start().await.expect("driver");
    let (conversation, alice_client, bob_client) = joined_pair(&db, &driver, &ingest).await;

    let ack = alice_client
        .emit_ack(
            "message",
            json!({"conversationId": conversation.to_string(), "content": "over three nodes"}),
        )
        .await
        .expect("ack");
    assert_eq!(ack["success"], true, "{ack}");

    let received = bob_client.next_event("message").await.expect("delivered");
    assert_eq!(received["content"], "over three nodes");
    assert_eq!(received["seq"], 1);
    assert_eq!(received["id"], ack["message"]["id"]);
    // Bob got it from the room, so the row is committed (the persister publishes after
    // commit, and a node's catch-up reads Postgres). Whether alice hears of it as
    // `message_delivered` depends on which path reached her node first, so it is not
    // asserted here.
    assert_eq!(
        db.seqs(conversation).await.expect("rows"),
        vec![(1, "over three nodes".to_string())]
    );
}

#[tokio::test]
async fn losing_the_node_ingest_is_connected_to_loses_no_acked_message() {
    let db = TestDb::new().await.expect("db");
    let mut cluster = NatsCluster::start().await.expect("cluster");
    let services = start_all(&db, &cluster).await;
    let ingest = services[0].url();
    let driver = Driver::start().await.expect("driver");
    let (conversation, alice_client, bob_client) = joined_pair(&db, &driver, &ingest).await;

    let mut ingest_node = None;
    for node in 0..NODES {
        let connections = cluster.client_connections(node).await.expect("connz");
        if connections.iter().any(|c| c.name == "coachwire-ingest") {
            ingest_node = Some(node);
        }
    }
    let ingest_node = ingest_node.expect("ingest is connected to some node");
    cluster.kill(ingest_node).await;

    // While raft groups led from the lost node re-elect, a send may answer UNAVAILABLE;
    // the client retries with the same clientMessageId, as §7.2 tells it to.
    let payload = json!({
        "conversationId": conversation.to_string(),
        "content": "after a node loss",
        "clientMessageId": uuid::Uuid::new_v4().to_string(),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ack = loop {
        let ack = alice_client
            .emit_ack_within("message", vec![payload.clone()], Duration::from_secs(15))
            .await
            .expect("an answer");
        if ack["success"] == true {
            break ack;
        }
        assert_eq!(ack["code"], "UNAVAILABLE", "{ack}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never accepted: {ack}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let received = bob_client
        .try_next_event("message", Duration::from_secs(60))
        .await
        .expect("delivered after the node loss");
    assert_eq!(received["id"], ack["message"]["id"]);
    assert_eq!(received["seq"], 1);
    assert_eq!(
        db.seqs(conversation).await.expect("rows"),
        vec![(1, "after a node loss".to_string())]
    );
    let survivors: Vec<usize> = (0..NODES).filter(|&n| n != ingest_node).collect();
    let mut moved = false;
    for node in survivors {
        let connections = cluster.client_connections(node).await.expect("connz");
        moved |= connections.iter().any(|c| c.name == "coachwire-ingest");
    }
    assert!(moved, "ingest reconnected to a surviving node");

    cluster.restart(ingest_node).await.expect("restart");
    cluster.wait_for_leader().await.expect("the node rejoins");
}

/// A fresh two-person conversation with both people connected to `ingest` and joined.
async fn joined_pair(
    db: &TestDb,
    driver: &Driver,
    ingest: &str,
) -> (ConversationId, Client, Client) {
    let (alice, bob) = (new_user(), new_user());
    let conversation = db.conversation(&[alice, bob]).await.expect("conversation");
    let alice_client = driver
        .connect("alice", ingest, Some(&token(alice, None, 3600)))
        .await
        .expect("alice connects");
    let bob_client = driver
        .connect("bob", ingest, Some(&token(bob, None, 3600)))
        .await
        .expect("bob connects");
    alice_client.join(conversation).await.expect("alice joins");
    bob_client.join(conversation).await.expect("bob joins");
    (conversation, alice_client, bob_client)
}
