//! A real Kafka-protocol broker for tests: tansu, started as a separate
//! process on 127.0.0.1 and a free port, stopped when dropped. The binary
//! comes from `scripts/broker.sh install` (or `LIFELEDGER_TANSU`).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker with in-memory storage.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    pub port: u16,
}

fn tansu_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFELEDGER_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    home.join("bin/tansu")
}

fn tansu() -> PathBuf {
    let path = tansu_path();
    assert!(
        path.exists(),
        "the Kafka tests need the tansu broker at {}: run `bash scripts/broker.sh install` (the README's test command does)",
        path.display()
    );
    path
}

impl Broker {
    /// Whether the broker binary is there to start (benchmarks skip what
    /// needs it otherwise; tests never do).
    pub fn installed() -> bool {
        tansu_path().exists()
    }

    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
