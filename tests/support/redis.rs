//! A real `redis-server` on loopback for shared-budget tests, from the
//! wrapper `scripts/redis.sh` puts in the cache (or PATH). It can be killed
//! and restarted on the same port, to test what sidecars do meanwhile.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let cache = std::env::var_os("TOLLGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
                .join("tollgate")
        });
    let wrapper = cache.join("bin/redis-server");
    assert!(
        wrapper.exists(),
        "{} is missing: run scripts/test-deps.sh (make test does)",
        wrapper.display()
    );
    wrapper
}

impl Redis {
    /// Starts on a free loopback port, without persistence.
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis { port, child: None };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Closing the guard shell's stdin makes it kill -9 the server.
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        // A guard shell owns the server and kills it when its stdin closes —
        // on kill() or when the test process dies, however it dies.
        let child = Command::new("sh")
            .args([
                "-c",
                r#""$0" "$@" </dev/null & p=$!; read _; { kill -9 $p; wait $p; } 2>/dev/null"#,
            ])
            .arg(binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// Whether it answers PING.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Keys whose names match `pattern`, via KEYS (test data only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let client = ::redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        ::redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap()
    }

    /// The TTL of `key` in milliseconds (-1: none, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        let client = ::redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        ::redis::cmd("PTTL").arg(key).query(&mut conn).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
