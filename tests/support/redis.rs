//! A real `redis-server` on loopback for shared-budget tests, from the
//! wrapper `scripts/redis.sh` puts in the cache (or PATH). It can be killed
//! and restarted on the same port, to test what sidecars do meanwhile.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct Redis {
    /// The plain port (the tests' own inspection goes through it).
    pub port: u16,
    /// With TLS: the TLS port and the files the server was started with.
    pub tls: Option<Tls>,
    child: Option<Child>,
}

/// A test PKI for Redis over TLS: one CA, a server certificate for
/// 127.0.0.1 and a client certificate, as PEM files in a temporary directory.
pub struct Tls {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Whether the server requires a client certificate.
    pub require_client_cert: bool,
}

impl Tls {
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// A fresh PKI (nothing listens on `port` until a Redis uses it).
    pub fn generate(port: u16, require_client_cert: bool) -> Tls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tollgate test Redis CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose, file: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{file}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "redis",
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec![],
            "tollgate-sidecar",
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        Tls {
            port,
            dir,
            require_client_cert,
        }
    }
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
        let mut r = Redis {
            port: super::free_port(),
            tls: None,
            child: None,
        };
        r.restart();
        r
    }

    /// Starts with a TLS port besides the plain one, its certificates signed
    /// by a fresh CA (`tls.ca()`); `require_client_cert` turns on
    /// `tls-auth-clients yes`.
    pub fn start_tls(require_client_cert: bool) -> Redis {
        let mut r = Redis {
            port: super::free_port(),
            tls: Some(Tls::generate(super::free_port(), require_client_cert)),
            child: None,
        };
        r.restart();
        r
    }

    /// `rediss://127.0.0.1:<tls port>/0`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls.as_ref().unwrap().port)
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
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--tls-port".to_owned(),
                    t.port.to_string(),
                    "--tls-cert-file".to_owned(),
                    t.server_cert().display().to_string(),
                    "--tls-key-file".to_owned(),
                    t.server_key().display().to_string(),
                    "--tls-ca-cert-file".to_owned(),
                    t.ca().display().to_string(),
                    "--tls-auth-clients".to_owned(),
                    if t.require_client_cert { "yes" } else { "no" }.to_owned(),
                ]
            }))
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

    /// A connection of the test's own, over the plain port.
    fn connection(&self) -> ::redis::Connection {
        let client = ::redis::Client::open(self.url()).unwrap();
        client.get_connection().unwrap()
    }

    /// Keys whose names match `pattern`, via KEYS (test data only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.connection();
        ::redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap()
    }

    /// How many members the sorted set `key` holds (a shared budget's
    /// admissions still in its window).
    pub fn zcard(&self, key: &str) -> u64 {
        let mut conn = self.connection();
        ::redis::cmd("ZCARD").arg(key).query(&mut conn).unwrap()
    }

    /// How many entries the list `key` holds (a shared size budget's
    /// weighted log).
    #[allow(dead_code)]
    pub fn llen(&self, key: &str) -> u64 {
        let mut conn = self.connection();
        ::redis::cmd("LLEN").arg(key).query(&mut conn).unwrap()
    }

    /// The TTL of `key` in milliseconds (-1: none, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.connection();
        ::redis::cmd("PTTL").arg(key).query(&mut conn).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
