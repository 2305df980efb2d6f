//! Real Redis Clusters for the tests: `redis-server` processes on loopback ports, joined with
//! `redis-cli --cluster create`, stopped when dropped. `.ci/run` installs `redis-server`; a
//! developer needs it on the PATH (Debian: `apt-get install redis-server`).
//!
//! With `TRIBUTARY_TEST_REDIS_URLS` set (`.ci/run` starts one cluster for the whole run),
//! [`RedisCluster::shared`] uses that cluster; tests that kill nodes always start their own.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisCluster {
    pub urls: Vec<String>,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: Option<TempDir>,
}

/// A port whose cluster bus port (port + 10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = 20_000 + (rand::random::<u16>() % 20_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

fn query(port: u16, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<String>(&mut conn).ok()
}

impl RedisCluster {
    /// The run's shared cluster (`TRIBUTARY_TEST_REDIS_URLS`), or a new one of 3 primaries.
    pub fn shared() -> RedisCluster {
        match std::env::var("TRIBUTARY_TEST_REDIS_URLS") {
            Ok(urls) if !urls.trim().is_empty() => RedisCluster {
                urls: urls.split(',').map(str::to_string).collect(),
                ports: Vec::new(),
                children: Vec::new(),
                _dir: None,
            },
            _ => RedisCluster::start(3),
        }
    }

    /// Starts `masters` primaries (no replicas) and waits until the cluster is up.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..masters {
            let port = free_port_pair();
            let child = spawn_node(dir.path(), port);
            ports.push(port);
            children.push(Some(child));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &ports {
            while query(port, &["PING"]).as_deref() != Some("PONG") {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli on the PATH");
        assert!(created.success(), "redis-cli --cluster create failed");
        for &port in &ports {
            while !query(port, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            {
                assert!(Instant::now() < deadline, "cluster on {port} not ok");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        RedisCluster {
            urls: ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
            ports,
            children,
            _dir: Some(dir),
        }
    }

    /// Kills primary `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts primary `i` again (same port, same cluster config): it takes its slots back.
    pub fn restart(&mut self, i: usize) {
        let (Some(dir), Some(&port)) = (self._dir.as_ref(), self.ports.get(i)) else {
            panic!("only a cluster this test started can be restarted");
        };
        self.children[i] = Some(spawn_node(dir.path(), port));
        let deadline = Instant::now() + Duration::from_secs(10);
        for &p in &self.ports {
            while !query(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok")) {
                assert!(
                    Instant::now() < deadline,
                    "cluster on {p} not ok after restart"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "1000",
            "--dir",
            dir.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            &format!("redis-{port}.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH (apt-get install redis-server)")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{:016x}", rand::random::<u64>())
}
