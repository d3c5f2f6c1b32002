//! A real S3-compatible server for the archive tests: moto in server mode,
//! started as a separate process on 127.0.0.1 and a free port, stopped
//! when dropped. `scripts/s3-server.sh install` provides it (the README's
//! test command runs that).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server, with nothing in it at first.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    pub port: u16,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

impl S3Server {
    pub fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        S3Server::start_on(port)
    }

    /// Starts the server on this port (for a test that needs to know the
    /// port before the server is up).
    pub fn start_on(port: u16) -> S3Server {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server: run `bash scripts/s3-server.sh install`");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {port}: run `bash scripts/s3-server.sh install`"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { child, port }
    }

    /// Starts forwarding connections made to `port` (free until now) to
    /// this server: the server "comes up" there only once the test has
    /// made it ready (a bucket with Object Lock made in two calls, which a
    /// client retrying on that port could otherwise slip an upload
    /// between; moto refuses a lock configuration on a bucket that holds
    /// objects). Connections go on until the process ends.
    pub fn forward_from(&self, port: u16) {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let to = self.port;
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "lifeledger-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "lifeledger-test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("LIFELEDGER_ARCHIVE_OBJECT_LOCK", "true".to_owned()),
        ]
    }

    /// Runs `scripts/s3-bucket.py` against this server; returns what it
    /// printed (`ok` or `refused CODE`).
    pub fn bucket_tool(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(scripts().join("s3-bucket.py"))
            .arg(self.endpoint())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3-bucket.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates a bucket; with Object Lock (compliance mode, `lock_days` of
    /// default retention) when `lock_days` is given.
    pub fn create_bucket(&self, name: &str, lock_days: Option<u32>) {
        let days = lock_days.map(|d| d.to_string());
        let mut args = vec!["create", name];
        if let Some(d) = &days {
            args.push(d);
        }
        assert_eq!(self.bucket_tool(&args), "ok");
    }
}

/// Copies what arrives on `from` to `to` on a thread of its own, then
/// closes `to` for writing.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
