//! Real git servers on loopback for transport tests, the way production reaches a git host: `git http-backend`
//! behind nginx (via fcgiwrap) over HTTPS with basic auth, and OpenSSH's `sshd`. Each runs on a free port of
//! 127.0.0.1 with its configuration, keys and repositories in a temporary folder, and is killed on drop.
//!
//! Use from a test file with `mod support { pub mod git_servers; }`. A missing binary fails the test with a
//! pointer to `scripts/setup-test-deps.sh`, rather than skipping it: a skipped transport test reads as a pass.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion; panics with its stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The git CLI, isolated from the user's configuration.
pub fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com");
    cmd
}

fn require(binary: &str) -> PathBuf {
    let candidates = [
        PathBuf::from(binary),
        Path::new("/usr/sbin").join(binary),
        Path::new("/usr/bin").join(binary),
        Path::new("/usr/local/bin").join(binary),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_absolute() && p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{binary}` is not installed: the git transport tests run real servers. \
                 Run `scripts/setup-test-deps.sh` (as root: it apt-installs nginx-light, fcgiwrap, openssh-server)."
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `cmd` in a process group of its own, so that [`stop`] also ends the workers it forks (fcgiwrap's
/// children, sshd's per-connection processes).
fn spawn(cmd: &mut Command, log: &Path) -> Child {
    use std::os::unix::process::CommandExt as _;
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn stop(child: &mut Child) {
    // The group this test started (see `spawn`), by its id.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", child.id()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Creates the bare repository `<root>/<name>` on branch `main` with one commit holding `files`.
pub fn seed_repository(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let bare = root.join(name);
    run(git(root).args(["init", "-q", "--bare", "-b", "main"]).arg(&bare));
    let work = tempfile::tempdir().expect("tempdir");
    run(git(work.path()).args(["init", "-q", "-b", "main"]));
    for (path, content) in files {
        let p = work.path().join(path);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    run(git(work.path()).args(["add", "-A"]));
    run(git(work.path()).args(["commit", "-q", "-m", "seed"]));
    run(git(work.path())
        .arg("push")
        .arg("-q")
        .arg(&bare)
        .arg("HEAD:refs/heads/main"));
    bare
}

/// `git http-backend` behind nginx over HTTPS with basic auth; repositories under [`HttpsGit::root`].
pub struct HttpsGit {
    nginx: Child,
    fcgiwrap: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl HttpsGit {
    /// Starts the server; `users` are (name, password) pairs accepted by basic auth (a token is a password
    /// for the user `x-access-token`).
    pub fn start(users: &[(&str, &str)]) -> HttpsGit {
        let nginx = require("nginx");
        let fcgiwrap = require("fcgiwrap");
        let openssl = require("openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("repos")).expect("mkdir");
        std::fs::create_dir_all(d.join("tmp")).expect("mkdir");

        // A private CA and a server certificate for 127.0.0.1 signed by it: what `ca_file` is for.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new(&openssl)
            .current_dir(d)
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=tollgate test CA"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.pem"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        run(Command::new(&openssl)
            .current_dir(d)
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .args(["-keyout", "server.key", "-out", "server.csr"]));
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write");
        run(Command::new(&openssl).current_dir(d).args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ]));

        let mut htpasswd = String::new();
        for (user, password) in users {
            let hash = run(Command::new(&openssl).args(["passwd", "-apr1", password]));
            htpasswd.push_str(&format!("{user}:{}\n", hash.trim()));
        }
        std::fs::write(d.join("htpasswd"), htpasswd).expect("write");

        let exec_path = run(git(d).arg("--exec-path")).trim().to_string();
        let backend = Path::new(&exec_path).join("git-http-backend");
        assert!(backend.is_file(), "{} is missing: git is incomplete", backend.display());
        let socket = d.join("fcgi.sock");
        let mut fcgi = spawn(
            Command::new(&fcgiwrap)
                .arg("-c")
                .arg("4")
                .arg("-s")
                .arg(format!("unix:{}", socket.display())),
            &d.join("fcgiwrap.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "fcgiwrap did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }

        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = d.join("nginx.conf");
            let p = |name: &str| d.join(name).display().to_string();
            std::fs::write(
                &conf,
                format!(
                    r#"daemon off;
master_process off;
pid {pid};
error_log {log} warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  fastcgi_temp_path {tmp}/fastcgi;
  proxy_temp_path {tmp}/proxy;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 0;
    auth_basic "git";
    auth_basic_user_file {htpasswd};
    location ~ ^/git(/.*)$ {{
      fastcgi_pass unix:{socket};
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {repos};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param PATH_INFO $1;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
      fastcgi_param GIT_PROTOCOL $http_git_protocol;
    }}
  }}
}}
"#,
                    pid = p("nginx.pid"),
                    log = p("nginx.log"),
                    tmp = p("tmp"),
                    cert = p("server.pem"),
                    key = p("server.key"),
                    htpasswd = p("htpasswd"),
                    socket = socket.display(),
                    backend = backend.display(),
                    repos = p("repos"),
                ),
            )
            .expect("write");
            let log = d.join("nginx.stderr");
            let mut child = spawn(Command::new(&nginx).arg("-p").arg(d).arg("-c").arg(&conf), &log);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    up = true;
                    break;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return HttpsGit {
                    nginx: child,
                    fcgiwrap: fcgi,
                    port,
                    dir,
                };
            }
            stop(&mut child);
            last = format!(
                "{}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(d.join("nginx.log")).unwrap_or_default()
            );
        }
        stop(&mut fcgi);
        panic!("nginx did not start: {last}");
    }

    /// Where repositories served as `https://127.0.0.1:PORT/git/<name>` live.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{name}", self.port)
    }

    /// The PEM certificate of the CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A folder for the test's own files (token and password files, state dirs).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        stop(&mut self.nginx);
        stop(&mut self.fcgiwrap);
    }
}

/// OpenSSH `sshd` as the current user, serving repositories by absolute path
/// (`ssh://USER@127.0.0.1:PORT/abs/path.git`) to one client key.
pub struct SshGit {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

impl SshGit {
    pub fn start() -> SshGit {
        let sshd = require("sshd");
        let keygen = require("ssh-keygen");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("repos")).expect("mkdir");
        for key in ["host_ed25519", "client_ed25519", "other_ed25519"] {
            run(Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).expect("copy");
        let user = run(Command::new("id").arg("-un")).trim().to_string();
        // sshd insists on its privilege separation folder, which the Debian service would create at start.
        if !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (run the tests as root)");
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = d.join("sshd_config");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                     StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nPidFile {pid}\nLogLevel ERROR\n",
                    host = d.join("host_ed25519").display(),
                    auth = d.join("authorized_keys").display(),
                    pid = d.join("sshd.pid").display(),
                ),
            )
            .expect("write");
            let log = d.join("sshd.log");
            let mut child = spawn(Command::new(&sshd).arg("-D").arg("-e").arg("-f").arg(&conf), &log);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return SshGit { child, port, user, dir };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stop(&mut child);
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start: {last}");
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.root().join(name).display()
        )
    }

    /// The private key the server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A private key the server does not accept.
    pub fn other_key(&self) -> PathBuf {
        self.dir.path().join("other_ed25519")
    }

    /// A `known_hosts` line for this server, as `ssh-keyscan -p PORT 127.0.0.1` would print it.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).expect("host key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().expect("type"), fields.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// The same line with another key: what a man in the middle would present.
    pub fn wrong_known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("other_ed25519.pub")).expect("key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().expect("type"), fields.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }
}

impl Drop for SshGit {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
