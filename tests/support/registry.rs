//! A real OCI registry for integration tests: Debian's `docker-registry` (CNCF distribution 2.8)
//! on a free loopback port with a throwaway storage root, stopped when the handle is dropped.
//!
//! Use from a test file with `mod support { pub mod registry; }` (or a `support/mod.rs` that
//! declares it). Tests fail, rather than skip, when the binary is missing: a skipped registry test
//! reads as a pass in CI.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "docker-registry";

/// A running registry. `host()` is `127.0.0.1:<port>`, to be configured with `insecure: true`.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers. Panics with what to do if the
    /// binary is not installed or the registry does not come up.
    pub fn start() -> Registry {
        let binary = find_binary().unwrap_or_else(|| {
            panic!(
                "`{BINARY}` is not installed: the OCI store tests need a real registry. \
                 Run `scripts/setup-test-deps.sh` (as root: it apt-installs docker-registry, umoci, skopeo)."
            )
        });
        // The free port is found by binding and releasing it; another process can take it in
        // between, so try a few times before giving up.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(r) => return r,
                Err(e) => last_error = e,
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    fn try_start(binary: &Path) -> Result<Registry, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| e.to_string())?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: tollgate-tests\n",
                storage.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut registry = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = registry.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("it exited with {status}: {}", registry.log()));
            }
            if v2_answers(addr) {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                return Err(format!("GET /v2/ did not answer within 10 s: {}", registry.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `127.0.0.1:<port>`: the registry host part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The storage root (to corrupt or inspect blobs in tests).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// What the registry logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port with nothing listening on it (just now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(BINARY))
        .find(|p| p.is_file())
}

/// True once the registry answers `GET /v2/` with any HTTP status (200, or 401 with auth).
fn v2_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1."))
}
