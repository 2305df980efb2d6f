//! `tributary demo` as a process for the tests: started on free ports, its printed walkthrough
//! read, stopped with SIGTERM — also when a test fails, so no demo is left running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct DemoProcess {
    child: Child,
    /// What the demo printed, up to its `Metrics:` line.
    pub printed: Vec<String>,
}

impl DemoProcess {
    /// `tributary demo <args>`, once it has printed its walkthrough.
    pub fn spawn(args: &[&str]) -> DemoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("demo")
            .args(args)
            .env("TRIBUTARY__SERVER__BIND", "127.0.0.1:0")
            .env("TRIBUTARY__ADMIN__BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tributary demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let done = line.starts_with("Metrics:");
                lines.push(line);
                if done {
                    let _ = tx.send(lines.clone());
                }
            }
        });
        // Owned before the wait, so a demo that never prints is still stopped.
        let mut demo = DemoProcess {
            child,
            printed: Vec::new(),
        };
        demo.printed = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its walkthrough");
        demo
    }

    /// The first word printed after `label` (`DCS endpoint: …`).
    pub fn value(&self, label: &str) -> String {
        self.printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} printed: {:#?}", self.printed))
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Stops the demo with SIGTERM; it must exit cleanly.
    pub fn stop(mut self) {
        self.terminate();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the demo stops cleanly on SIGTERM: {status:?}"
        );
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}
