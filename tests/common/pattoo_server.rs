//! The real pattoo server's database side, for tests of what it imports:
//! a private MariaDB instance (Debian's `mariadb-server-core`: a data directory
//! made by `mariadb-install-db` in a temporary directory, `mariadbd` on its
//! own socket there and on a free 127.0.0.1 port), and pattoo's own code at
//! a fixed commit, taken from the git directory `PATTOO_SERVER_GIT` names
//! (a clone of PalisadoesFoundation/pattoo; pattoo is not on PyPI), with
//! its libraries installed from PyPI into Cargo's scratch directory for
//! tests. Its tables are made by its installer's own code
//! (`setup/_pattoo/db.py`, `install()`), and `bin/pattoo_cli.py` runs as an
//! operator runs it.
//!
//! Without `PATTOO_SERVER_GIT` a test says it was skipped. With it, a
//! missing MariaDB or PyPI package skips the test, except under
//! `CI=true`, where it fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::python;

/// The pattoo commit the tests run (master, 2020-08-31).
pub const PATTOO_COMMIT: &str = "f4e63de0f42b26795720d93a199f5cd4ce0dc25a";

/// pattoo's libraries as it needs them (its `pip_requirements.txt` less
/// the web server's), pinned: SQLAlchemy before 1.4, whose
/// `engine.execute` and `create_engine(encoding=...)` pattoo calls.
const PACKAGES: &[&str] = &[
    "PattooShared==0.0.98",
    "SQLAlchemy==1.3.24",
    "PyMySQL==1.1.1",
    "pandas==2.2.3",
    "graphene==2.1.9",
    "graphene-sqlalchemy==2.3.0",
    "PyYAML==6.0.2",
];
const PROBE: &str =
    "import pattoo_shared, pymysql, pandas, graphene_sqlalchemy, yaml, sqlalchemy\n\
    assert sqlalchemy.__version__ == '1.3.24', sqlalchemy.__version__";

const DB_NAME: &str = "pattoo";
const DB_USER: &str = "pattoo";
const DB_PASSWORD: &str = "pattoo-test";

/// A MariaDB instance holding pattoo's tables, and pattoo's code to run
/// against it. Dropping it kills the server and removes its files.
pub struct PattooServer {
    mariadbd: Child,
    port: u16,
    /// The checkout: `{dir}/pattoo` (`pattoo_cli.py` insists on living
    /// in a directory `pattoo/bin`).
    root: PathBuf,
    config_dir: PathBuf,
    python_path: String,
    dir: tempfile::TempDir,
}

/// Says on stderr that `test` was skipped and why; under `CI=true` with
/// `required`, fails instead.
fn skipped(test: &str, why: &str, required: bool) -> Option<PattooServer> {
    assert!(
        !required || std::env::var("CI").as_deref() != Ok("true"),
        "CI must run {test}, but {why}"
    );
    // Straight to stderr: the test harness would hide a println!.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

/// A program by name on `PATH`, else in `/usr/sbin` (where Debian puts
/// `mariadbd`, outside an ordinary user's `PATH`).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Starts MariaDB with pattoo's tables in it, made by pattoo's installer,
/// or says why not (see the module's note on skipping).
pub fn start(test: &str) -> Option<PattooServer> {
    let Ok(git) = std::env::var("PATTOO_SERVER_GIT") else {
        return skipped(
            test,
            &format!(
                "set PATTOO_SERVER_GIT to a git directory of PalisadoesFoundation/pattoo \
                 (commit {PATTOO_COMMIT}) to import into the real pattoo server"
            ),
            false,
        );
    };
    // mariadb-install-db runs my_print_defaults (the client core's).
    let (Some(install_db), Some(mariadbd), Some(_)) = (
        program("mariadb-install-db"),
        program("mariadbd"),
        program("my_print_defaults"),
    ) else {
        return skipped(
            test,
            "mariadb-install-db, mariadbd or my_print_defaults cannot be found; \
             install Debian's mariadb-server-core and mariadb-client-core",
            true,
        );
    };
    let python_path = match python::try_packages_path("pattoo-server", PACKAGES, PROBE) {
        Ok(path) => path,
        Err(why) => return skipped(test, &why, true),
    };
    let dir = tempfile::Builder::new()
        .prefix("pattoo-server")
        .tempdir()
        .unwrap();
    let root = dir.path().join("pattoo");
    let archive = Command::new("sh")
        .args([
            "-c",
            "git --git-dir \"$1\" archive --prefix=pattoo/ \"$2\" | tar -x -C \"$3\"",
            "sh",
        ])
        .args([git.as_str(), PATTOO_COMMIT])
        .arg(dir.path())
        .status()
        .expect("sh runs");
    assert!(
        archive.success() && root.join("bin/pattoo_cli.py").is_file(),
        "PATTOO_SERVER_GIT={git}: git archive of pattoo commit {PATTOO_COMMIT} failed"
    );

    let data = dir.path().join("data");
    let root_user = nix::unistd::geteuid().is_root();
    let mut install = Command::new(&install_db);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if root_user {
        install.arg("--user=root");
    }
    let output = install.output().expect("mariadb-install-db runs");
    assert!(
        output.status.success(),
        "{} --datadir={}: {}\n{}{}",
        install_db.display(),
        data.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The database and a user for pattoo, made before the server takes
    // connections.
    let init = dir.path().join("init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE DATABASE {DB_NAME};\n\
             CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';\n\
             GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';\n"
        ),
    )
    .unwrap();

    let (mariadbd, port) = run_mariadbd(&mariadbd, dir.path(), &data, &init, root_user);

    let config_dir = dir.path().join("etc");
    std::fs::create_dir(&config_dir).unwrap();
    let mut yaml = String::from("pattoo:\n  log_level: debug\n");
    for name in ["log", "cache", "daemon"] {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        yaml.push_str(&format!("  {name}_directory: {}\n", path.display()));
    }
    std::fs::write(config_dir.join("pattoo.yaml"), yaml).unwrap();
    std::fs::write(
        config_dir.join("pattoo_server.yaml"),
        format!(
            "pattoo_db:\n  db_hostname: 127.0.0.1:{port}\n  db_name: {DB_NAME}\n  \
             db_username: {DB_USER}\n  db_password: {DB_PASSWORD}\n  db_pool_size: 2\n  \
             db_max_overflow: 4\n"
        ),
    )
    .unwrap();

    let server = PattooServer {
        mariadbd,
        port,
        root,
        config_dir,
        python_path,
        dir,
    };
    // The installer's database step: tables, the language `en`, group 1
    // "Pattoo Default" and pattoo's own translation groups.
    let output = server.python(
        Command::new(python::python())
            .arg("-c")
            .arg(
                "import sys\nsys.path[:0] = [sys.argv[1], sys.argv[1] + '/setup']\n\
                 from _pattoo import db\ndb.install()\n",
            )
            .arg(&server.root),
    );
    assert!(
        output.status.success(),
        "pattoo's setup/_pattoo/db.py install() failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(server)
}

/// Starts `mariadbd` on a free loopback port and waits until it greets a
/// client. The port is found by binding port 0 and letting it go, so
/// another process may take it first: then it tries again on another.
fn run_mariadbd(
    mariadbd: &Path,
    dir: &Path,
    data: &Path,
    init: &Path,
    root_user: bool,
) -> (Child, u16) {
    let log = dir.join("mariadbd.err");
    for _ in 0..3 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let mut command = Command::new(mariadbd);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--init-file={}", init.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            // Small and quick: pattoo commits each of a few thousand rows
            // on its own, and nothing here has to outlive a crash.
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root_user {
            command.arg("--user=root");
        }
        let mut child = command.spawn().expect("mariadbd runs");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Address already in use") {
                    break;
                }
                panic!("mariadbd exited ({status}) before taking connections:\n{text}");
            }
            if greets(port) {
                return (child, port);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("mariadbd took no connection on 127.0.0.1:{port} within 120 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("mariadbd found its port taken three times running");
}

/// Whether a MySQL server on the port sends its greeting, which it does
/// once it takes connections (after running its `--init-file`).
fn greets(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(1))
}

impl PattooServer {
    /// Runs a Python command with pattoo's configuration and libraries.
    fn python(&self, command: &mut Command) -> Output {
        command
            .env("PATTOO_CONFIGDIR", &self.config_dir)
            .env("PYTHONPATH", &self.python_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("python runs")
    }

    /// `bin/pattoo_cli.py args...`, as an operator runs it.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.python(
            Command::new(python::python())
                .arg(self.root.join("bin/pattoo_cli.py"))
                .args(args),
        )
    }

    /// The rows `sql` selects, every value as text (bytes decoded as
    /// UTF-8, SQL NULL as `NULL`), read with PyMySQL.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let script = "import sys, json, pymysql\n\
            connection = pymysql.connect(host='127.0.0.1', port=int(sys.argv[1]), \
            user=sys.argv[2], password=sys.argv[3], database=sys.argv[4])\n\
            cursor = connection.cursor()\n\
            cursor.execute(sys.argv[5])\n\
            text = lambda v: 'NULL' if v is None else v.decode() if isinstance(v, bytes) else str(v)\n\
            print(json.dumps([[text(v) for v in row] for row in cursor.fetchall()]))\n";
        let output = self.python(
            Command::new(python::python())
                .args(["-c", script])
                .arg(self.port.to_string())
                .args([DB_USER, DB_PASSWORD, DB_NAME, sql]),
        );
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for PattooServer {
    fn drop(&mut self) {
        // Its files go with the temporary directory: nothing to shut down
        // cleanly for.
        let _ = self.mariadbd.kill();
        let _ = self.mariadbd.wait();
    }
}
