//! The processes a bench run starts: each system under test is this same binary with another
//! command (`serve`, `mock-provider`, `bench-baseline`), supervised from start to stop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process serving HTTP.
pub(super) struct Service {
    name: String,
    child: Child,
    pub(super) addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Starts `exe args…` and waits for it to print `listening on http://<addr>`.
    pub(super) fn spawn(
        name: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<Service, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.env("RUST_LOG", "warn,tributary::server=info");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let outputs: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().ok_or("no stdout")?),
            Box::new(child.stderr.take().ok_or("no stderr")?),
        ];
        for out in outputs {
            let tx = tx.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(url) = line.split("listening on http://").nth(1) {
                        let addr = url.split(['/', ' ']).next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() < 200 {
                        log.push(line);
                    }
                }
            });
        }
        let give_up = Instant::now() + Duration::from_secs(120);
        let announced = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break Ok(addr),
                Err(_) if Instant::now() > give_up => break Err(()),
                Err(_) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        // Give the log readers a moment to collect the last lines.
                        std::thread::sleep(Duration::from_millis(100));
                        break Err(());
                    }
                }
            }
        };
        match announced {
            Ok(addr) => {
                let addr = addr
                    .parse()
                    .map_err(|_| format!("{name} announced a bad address {addr:?}"))?;
                Ok(Service {
                    name: name.to_string(),
                    child,
                    addr,
                    log,
                })
            }
            Err(_) => {
                let _ = child.kill();
                let log = log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                Err(format!("{name} did not start:\n{log}"))
            }
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What follows `marker` in the first log line holding it, waiting up to `wait` for the
    /// line: how a second listener's address (Tributary's admin API) is found.
    pub(super) fn logged_after(&self, marker: &str, wait: Duration) -> Option<String> {
        let until = Instant::now() + wait;
        loop {
            let found = self
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find_map(|line| line.split(marker).nth(1).map(str::to_string));
            if found.is_some() || Instant::now() > until {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// SIGTERM, then SIGKILL if it does not stop within 10 s. A process that had already died
    /// or stops with a failure gets its log printed.
    pub(super) fn stop(mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "{} had exited by itself ({status}); its log:\n{}",
                self.name,
                self.log_text()
            );
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() && status.code().is_some() {
                    eprintln!(
                        "{} stopped with {status}; its log:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop in 10 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
