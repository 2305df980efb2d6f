//! Tributary on the Redis Cluster store (`[store] backend = "redis"`): the same server, its
//! state in a real cluster, kept across a restart.

use std::sync::Arc;

use serde_json::json;
use tributary::config::Backend;
use tributary::ids::VisitorId;

use crate::common::*;

fn on_redis(config: &mut tributary::config::Config, cluster: &RedisCluster, prefix: &str) {
    config.store.backend = Backend::Redis;
    config.store.redis_urls = cluster.urls.clone();
    config.store.redis_prefix = prefix.to_string();
    config.store.node_id = "node-a".into();
    config.validate().unwrap();
}

#[actix_web::test]
async fn a_server_keeps_profiles_mappings_and_catalog_in_redis_across_a_restart() {
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix();
    let cat = catalog(
        vec![],
        json!([{"sid": 11, "name": "cars", "traitType": "RULE_BASED_TRAIT", "traitRule": "c_page == cars", "dataSourceId": 1}]),
        json!([{"sid": 101, "name": "keen", "segmentRule": "FREQUENCY([11T]) >= 2", "dataSourceId": 1}]),
    );
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
