//! Tributary on the Redis Cluster store (`[store] backend = "redis"`): the same server, its
//! state in a real cluster, kept across a restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary::config::Backend;
use tributary::core::ids::VisitorId;

use crate::common::*;

/// What the cross-node tests promise: a change on one node shows on the other within a second
/// (the catalog is polled every 250 ms, opt-outs are read from the shared store).
const WITHIN_A_SECOND: Duration = Duration::from_secs(1);

fn on_redis(config: &mut tributary::config::Config, cluster: &RedisCluster, prefix: &str) {
    config.store.backend = Backend::Redis;
    config.store.redis_urls = cluster.urls.clone();
    config.store.redis_prefix = prefix.to_string();
    config.store.node_id = "node-a".into();
    config.validate().unwrap();
}

/// Trait 11 (a car page) and segment 101 (two of them).
fn keen_catalog() -> tributary::core::catalog::Catalog {
    catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "keen", "segmentRule": "FREQUENCY([11T]) >= 2", "dataSourceId": 1}]),
    )
}

/// Two servers, `node-a` and `node-b`, on one cluster and prefix, with the keen catalog.
async fn two_nodes(
    cluster: &RedisCluster,
    tweak: impl Fn(&mut tributary::config::Config),
) -> Vec<TestServer> {
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(dir.path(), &keen_catalog());
        on_redis(&mut config, cluster, &prefix);
        config.store.node_id = name.into();
        tweak(&mut config);
        nodes.push(TestServer::start_config(config, dir).await);
    }
    nodes
}

#[actix_web::test]
async fn a_server_keeps_profiles_mappings_and_catalog_in_redis_across_a_restart() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix();
    let cat = keen_catalog();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &cat);
    on_redis(&mut config, &cluster, &prefix);
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let body = get(&server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={VISITOR}&d_cid=1%01crm-7"
    )))
    .await
    .json();
    assert_eq!(body["traits"], json!([11]), "{body}");
    assert_eq!(body["segments"], json!([]));
    // An admin change goes to the store too.
    let added = Admin::of(&server)
        .call(
        "POST",
        "/v1/traits",
        Some(json!({"name": "bikes", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == bikes", "dataSourceId": 1})),
        )
        .await;
    assert_eq!(
        added.status,
        201,
        "{}",
        String::from_utf8_lossy(&added.body)
    );
    server.running.sync_store().await.unwrap();
    let visitor = VisitorId::parse(VISITOR).unwrap();
    assert_eq!(server.stored_profile(visitor).traits[&11].count(), 1);
    assert_eq!(
        server
            .running
            .store()
            .get_link(1, "crm-7")
            .unwrap()
            .map(|l| l.visitor),
        Some(visitor)
    );
    assert!(
        !dir.path().join("store").exists(),
        "nothing is written to the sled path"
    );
    server.stop().await;

    // A new server on the same cluster and prefix: the visitor's second car page makes it keen,
    // the declared id still finds it, and the admin change is there.
    let server = TestServer::start_config(config.clone(), dir.clone()).await;
    let body = get(&server.url("/event?d_rtbd=json&d_cts=2&c_page=cars&d_cid=1%01crm-7"))
        .await
        .json();
    assert_eq!(body["uuid"], VISITOR, "{body}");
    assert_eq!(body["segments"], json!([101]), "{body}");
    let traits = Admin::of(&server)
        .call("GET", "/v1/traits", None)
        .await
        .json();
    assert_eq!(traits.as_array().unwrap().len(), 2, "{traits}");
    server.stop().await;
}

/// A node keeps the profiles of the visitors it serves and only checks their version on each
/// event: bytes changed in the store behind its back (same version) are not even read, while
/// another node's write (a new version) is read and built on, and so is a profile stored
/// without a version.
#[actix_web::test]
async fn a_node_checks_the_version_of_a_profile_it_holds_and_reads_another_nodes_write() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &keen_catalog());
    on_redis(&mut config, &cluster, &prefix);
    let server = TestServer::start_config(config, dir).await;
    let visitor = VisitorId::parse(VISITOR).unwrap();
    let event = server.url(&format!(
        "/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={VISITOR}"
    ));
    // An event, then the count of car pages its write leaves in the store.
    let stored_count_after_event = || async {
        assert_eq!(get(&event).await.status, 200);
        server.running.sync_store().await.unwrap();
        server.stored_profile(visitor).traits[&11].count()
    };
    assert_eq!(stored_count_after_event().await, 1);

    let client = redis::cluster::ClusterClient::new(cluster.urls.clone()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let key = format!("{prefix}:p:{{{VISITOR}}}");
    // Garbage behind the same version header: a node that read the profile would answer
    // error 200.
    let header: Vec<u8> = redis::cmd("GETRANGE")
        .arg(&key)
        .arg(0)
        .arg(8)
        .query(&mut redis)
        .unwrap();
    assert_eq!((header.len(), header[0]), (9, 0xFF), "the version header");
    // What another node (or an older Tributary) would write under the visitor's key.
    let mut store_value = |value: Vec<u8>| {
        redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .exec(&mut redis)
            .unwrap()
    };
    store_value([header, b"not a profile".to_vec()].concat());
    let body = get(&event).await.json();
    assert_eq!(body["errors"], serde_json::Value::Null, "{body}");
    assert_eq!(
        body["segments"],
        json!([101]),
        "the held profile counted: {body}"
    );
    server.running.sync_store().await.unwrap();
    assert_eq!(
        server.stored_profile(visitor).traits[&11].count(),
        2,
        "written over the garbage, as the version it replaced was the one held"
    );

    // Another node's write: its own profile under a new version.
    let mut theirs = server.stored_profile(visitor);
    for _ in 0..10 {
        theirs.realize(11, tributary::core::clock::unix_now(), false);
    }
    let mut value = vec![0xFF];
    value.extend_from_slice(&12345u64.to_be_bytes());
    value.extend_from_slice(&tributary::store::encode_profile(&theirs).unwrap());
    store_value(value);
    assert_eq!(
        stored_count_after_event().await,
        13,
        "the other node's ten realizations read, and this event's added to them"
    );

    // A profile written before versions existed (no header) is read, and rewritten with one.
    theirs.realize(11, tributary::core::clock::unix_now(), false);
    store_value(tributary::store::encode_profile(&theirs).unwrap());
    assert_eq!(
        stored_count_after_event().await,
        theirs.traits[&11].count() + 1
    );
    server.stop().await;
}

/// Two nodes on one cluster, the same visitors' events alternating between them and sent all
/// at once: every realization counts, none is lost to the other node's writes.
#[actix_web::test]
async fn two_nodes_sharing_a_cluster_lose_no_realization() {
    let cluster = RedisCluster::shared();
    // Writes wait a little, so both nodes hold unwritten events of the same visitors.
    let nodes = two_nodes(&cluster, |c| c.store.write_delay_ms = 50).await;
    const VISITORS: u64 = 6;
    const EVENTS: u64 = 20;
    let visitors: Vec<String> = (1..=VISITORS).map(|n| format!("{n}").repeat(38)).collect();
    let calls = (0..EVENTS).flat_map(|round| {
        let nodes = &nodes;
        visitors.iter().enumerate().map(move |(i, v)| {
            let node = &nodes[(round as usize + i) % 2];
            let url = node.url(&format!("/event?d_rtbd=json&c_page=cars&d_uuid={v}"));
            async move { get(&url).await.status }
        })
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    for node in &nodes {
        node.running.sync_store().await.unwrap();
    }
    for v in &visitors {
        let profile = nodes[0].stored_profile(VisitorId::parse(v).unwrap());
        assert_eq!(profile.traits[&11].count(), EVENTS, "visitor {v}");
        assert_eq!(profile.segments, [101]);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// A catalog change made through node A's admin API reaches node B's events within a second,
/// and B's own next change starts from it; so does an opt-out made on A.
#[actix_web::test]
async fn catalog_changes_and_opt_outs_reach_the_other_node_within_a_second() {
    let cluster = RedisCluster::shared();
    let nodes = two_nodes(&cluster, |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let added = Admin::of(a)
        .call(
            "POST",
            "/v1/traits",
            Some(json!({"name": "bikes", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == bikes", "dataSourceId": 1})),
        )
        .await;
    assert_eq!(added.status, 201);
    let sid = added.json()["sid"].as_u64().unwrap();
    wait_for(
        &format!("node B to realize trait {sid}"),
        WITHIN_A_SECOND,
        || async move {
            let body = get(&b.url("/event?d_rtbd=json&d_cts=2&c_page=bikes"))
                .await
                .json();
            if body["traits"] == json!([sid]) {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    // B's change builds on A's: both traits are there, on both nodes.
    let added = Admin::of(b)
        .call(
            "POST",
            "/v1/traits",
            Some(json!({"name": "vans", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == vans", "dataSourceId": 1})),
        )
        .await;
    assert_eq!(added.status, 201);
    let every = &nodes;
    wait_for(
        "every node to list 3 traits",
        WITHIN_A_SECOND,
        || async move {
            for node in every {
                let traits = Admin::of(node).call("GET", "/v1/traits", None).await.json();
                if traits.as_array().unwrap().len() != 3 {
                    return Err(traits.to_string());
                }
            }
            Ok(())
        },
    )
    .await;

    let event = format!("/event?d_rtbd=json&c_page=cars&d_uuid={VISITOR}");
    assert!(get(&b.url(&event)).await.json().get("errors").is_none());
    get(&a.url(&format!("/demoptout.jpg?d_uuid={VISITOR}"))).await;
    let event = &event;
    wait_for(
        "node B to refuse the opted-out visitor",
        WITHIN_A_SECOND,
        || async move {
            let body = get(&b.url(event)).await.json();
            if body["errors"][0]["code"] == 171 {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    for node in &nodes {
        node.running.sync_store().await.unwrap();
    }
    assert!(
        a.running
            .store()
            .load_profile(VisitorId::parse(VISITOR).unwrap())
            .unwrap()
            .is_none(),
        "B's unwritten events do not bring the profile back"
    );
    for node in nodes {
        node.stop().await;
    }
}

/// A primary of the cluster killed while events keep coming: every event is still answered,
/// with this event's segments and error 200 while its visitor's profile cannot be read; once
/// the primary is back, the node recovers without a restart.
#[actix_web::test]
async fn events_are_answered_while_a_cluster_node_is_down_and_recover_after() {
    let mut cluster = RedisCluster::start(3);
    let prefix = unique_prefix();
    let cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "cars", "segmentRule": "11T", "dataSourceId": 1}]),
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path(), &cat);
    on_redis(&mut config, &cluster, &prefix);
    config.store.write_delay_ms = 20;
    let server = TestServer::start_config(config, dir).await;
    // Enough visitors that some live on every primary.
    let visitors: Vec<String> = (1..=9).map(|n| format!("{n}").repeat(38)).collect();
    let round = |label: &'static str| {
        let server = &server;
        let visitors = &visitors;
        async move {
            let mut unreadable = 0;
            let mut slowest = std::time::Duration::ZERO;
            for v in visitors {
                let started = std::time::Instant::now();
                let reply = get(&server.url(&format!(
                    "/event?d_rtbd=json&d_cts=2&c_page=cars&d_uuid={v}"
                )))
                .await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(reply.status, 200, "{label}");
                let body = reply.json();
                assert_eq!(body["segments"], json!([101]), "{label}: {body}");
                if body["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["code"] == 200))
                {
                    unreadable += 1;
                }
            }
            // Never hung: the deadline is 200 ms; a loaded machine may add to it.
            assert!(
                slowest < std::time::Duration::from_secs(2),
                "{label}: {slowest:?}"
            );
            unreadable
        }
    };
    assert_eq!(round("before").await, 0);
    server.running.sync_store().await.unwrap();

    cluster.kill(1);
    // Rounds until one has events that went on without their profile (each round checks
    // that none hung), while the cluster notices (node timeout 1 s) and while it is down.
    wait_for(
        "some events to go on without their profile",
        Duration::from_secs(20),
        || async move { round("down").await > 0 },
    )
    .await;
    let metrics = get(&server.url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("tributary_store_read_failures_total"),
        "failed reads are counted"
    );

    cluster.restart(1);
    wait_for(
        "the node to recover",
        Duration::from_secs(20),
        || async move { round("after").await == 0 },
    )
    .await;
    server.running.sync_store().await.unwrap();
    let profile = server.stored_profile(VisitorId::parse(&visitors[0]).unwrap());
    assert!(profile.traits[&11].count() >= 2, "writes resumed");
    server.stop().await;
}
