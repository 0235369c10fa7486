//! Real programs the tests run beside egress (a Redis server, an HTTP proxy, an OAuth 2.0
//! server, a Prometheus exposition checker): found on the machine, or installed when missing.
//!
//! The README's test command is `cargo test --workspace` on a fresh machine, so a test that needs
//! a real server installs it itself: from the OS packages ([`apt_binary`]) or the npm registry
//! ([`npm_binary`]) into `target/test-tools`. A program that cannot be found or installed fails
//! the test with a message that says what to install; no test is skipped silently.
//!
//! Installs are serialised across test binaries by `flock(1)` on one lock file, so parallel test
//! processes never race on dpkg's lock or on one npm folder. Programs are started by
//! [`Spawned::start`] and stopped by their PID when the guard drops.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The folder of installs that are not the OS's: `<workspace>/target/test-tools`.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-tools")
        .components()
        .collect()
}

/// Installed daemons must not start as system services (tests start their own, on free ports):
/// Debian's maintainer scripts ask `policy-rc.d`, and 101 means "action forbidden". The file is
/// written only when the machine has none, and removed again after the install.
const POLICY_RC_D: &str = "made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
     printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; fi;";
const POLICY_RC_D_END: &str = "if [ -n \"$made\" ]; then rm -f /usr/sbin/policy-rc.d; fi;";

/// The path of `binary`, installing the Debian package `package` when it is not on the machine.
///
/// # Panics
/// When the program is missing and cannot be installed (not root, no network to the
/// registry): the message names the package, so the person running the tests knows what to do.
pub fn apt_binary(binary: &str, package: &str) -> PathBuf {
    if let Some(path) = find_on_path(binary) {
        return path;
    }
    let script = format!(
        "command -v {binary} >/dev/null 2>&1 || command -v /usr/sbin/{binary} >/dev/null 2>&1 || \
         (apt-get update -q && {POLICY_RC_D} DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends {package}; status=$?; {POLICY_RC_D_END} exit $status)"
    );
    let status = locked(&script);
    match find_on_path(binary) {
        Some(path) => path,
        None => panic!(
            "this test needs `{binary}` and could not install it (the install exited with \
             {status}); install the OS package `{package}` (apt-get install {package}) and run \
             the tests again"
        ),
    }
}

/// The path of the executable `binary` of the npm package `spec` (`name@version`), installed
/// into `target/test-tools/npm` with the machine's npm when it is not there yet.
///
/// # Panics
/// When node or npm is missing or the install fails; the message says what to install.
pub fn npm_binary(spec: &str, binary: &str) -> PathBuf {
    let prefix = tools_dir().join("npm");
    let path = prefix.join("node_modules/.bin").join(binary);
    npm_install(spec, &prefix, &path, "");
    path
}

/// The npm prefix of the library `name` (its own folder, `target/test-tools/npm-lib/<name>`:
/// an `npm install --no-save` into a shared prefix removes the packages installed there
/// before). The package is installed from `spec` (`name@version`) when it is not there yet; a
/// test's own script imports it from `<prefix>/node_modules/<name>`. A mark written after the
/// install says it is complete, so that no test starts on a half-installed package.
///
/// # Panics
/// As [`npm_binary`].
pub fn npm_library(spec: &str, name: &str) -> PathBuf {
    let prefix = tools_dir().join("npm-lib").join(name);
    let mark = prefix.join(format!("installed-{}", spec.replace(['/', '@'], "_")));
    npm_install(
        spec,
        &prefix,
        &mark,
        &format!(" && touch '{}'", mark.display()),
    );
    prefix
}

/// Installs `spec` under `prefix` unless `path` exists, then runs `then` (a shell suffix).
fn npm_install(spec: &str, prefix: &Path, path: &Path, then: &str) {
    if path.exists() {
        return;
    }
    std::fs::create_dir_all(prefix).expect("target/ is writable by the test run");
    let script = format!(
        "test -e '{path}' || {{ npm install --prefix '{prefix}' --no-audit --no-fund \
         --no-save --loglevel=error '{spec}'{then}; }}",
        path = path.display(),
        prefix = prefix.display(),
    );
    let status = locked(&script);
    assert!(
        path.exists(),
        "this test needs the npm package `{spec}` and could not install it with npm (exited \
         with {status}); install Node.js and npm, or run `npm install --prefix {} {spec}`",
        prefix.display()
    );
}

/// Runs `script` with `sh -c` under the tools' install lock; returns how it exited.
fn locked(script: &str) -> String {
    let lock = std::env::temp_dir().join("egress-test-tools.lock");
    let result = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", script])
        .stdout(Stdio::null())
        .status();
    match result {
        Ok(status) => status.to_string(),
        Err(err) => format!("error: flock could not run ({err})"),
    }
}

/// `target/<profile>/examples/<name>` of the running test's profile: the example binary that
/// `cargo test` builds beside a package's tests, for tests that run it as a process.
///
/// # Panics
/// When it is missing (a lone `cargo test --test X` does not build examples).
pub fn cargo_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let binary = profile.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: `cargo test -p <package>` builds a package's examples \
         (`cargo build --examples` does too)",
        binary.display()
    );
    binary
}

/// `binary` looked up on `PATH`, then in the sbin folders (where Debian puts some daemons).
pub fn find_on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// A free TCP port on 127.0.0.1 (bound once and released, so the program can take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("loopback has free ports")
}

/// A program the test started, stopped by its PID (SIGKILL, then reaped) when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    name: String,
    /// A folder of the program's own, removed once it has stopped.
    scratch: Option<PathBuf>,
}

impl Spawned {
    /// Starts `command` and waits (at most `within`) until something accepts connections on
    /// `127.0.0.1:port`.
    ///
    /// # Panics
    /// When the program cannot start, exits early or does not listen in time; the message
    /// names it and how it exited.
    pub fn start(mut command: Command, port: u16, within: Duration) -> Self {
        let name = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {name}: {err}"));
        let mut spawned = Spawned {
            child,
            name,
            scratch: None,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return spawned;
            }
            if let Ok(Some(status)) = spawned.child.try_wait() {
                panic!(
                    "{} exited before listening on port {port}: {status}",
                    spawned.name
                );
            }
            assert!(
                started.elapsed() < within,
                "{} did not listen on port {port} within {within:?}",
                spawned.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes charge of a child the test started itself (to read its output first, say): it is
    /// stopped by its PID when the guard drops, unless it has exited by then.
    pub fn adopt(child: Child, name: impl Into<String>) -> Self {
        Spawned {
            child,
            name: name.into(),
            scratch: None,
        }
    }

    /// The process ID, for tests that signal the program themselves.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`"TERM"`, `"INT"`, ...) to this process by its PID, with `kill(1)`.
    ///
    /// # Panics
    /// When `kill` cannot run or refuses (the process is gone).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|err| panic!("kill could not run: {err}"));
        assert!(
            status.success(),
            "kill -s {signal} {} failed: {status}",
            self.name
        );
    }

    /// Waits at most `within` for the process to exit; its status, or `None` when it is still
    /// running.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if started.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// The child process, for tests that wait for it or read its exit status.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// A `redis-server` of the test's own on `127.0.0.1:port` (installed from the OS packages when
/// missing): no persistence, its working files in a fresh temporary folder, `requirepass` when
/// `password` is given; stopped by its PID when the guard drops, and its folder removed then.
/// Start it again on the same port to play a restart.
pub fn redis_server(port: u16, password: Option<&str>) -> Spawned {
    redis_server_of(&apt_binary("redis-server", "redis-server"), port, password)
}

/// [`redis_server`] with the `redis-server` at `binary` (found by the caller, nothing
/// installed): for programs that tell their user how to install it instead.
pub fn redis_server_of(binary: &Path, port: u16, password: Option<&str>) -> Spawned {
    let dir = std::env::temp_dir().join(format!("egress-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null());
    if let Some(password) = password {
        command.args(["--requirepass", password]);
    }
    let mut spawned = Spawned::start(command, port, Duration::from_secs(10));
    spawned.scratch = Some(dir);
    spawned
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // `Child::kill` signals this child's own PID; reaping it leaves no zombie behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_on_the_path_is_found_without_installing() {
        let sh = apt_binary("sh", "dash");
        assert!(sh.is_file(), "{}", sh.display());
    }

    #[test]
    fn a_started_program_is_stopped_by_its_pid_when_dropped() {
        let port = free_port();
        let mut command = Command::new("python3");
        command.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let spawned = Spawned::start(command, port, Duration::from_secs(10));
        let pid = spawned.pid();
        drop(spawned);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists after the guard dropped"
        );
    }
}
