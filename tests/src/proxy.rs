//! A real HTTP proxy for the tests: `tinyproxy` from the OS packages (installed by
//! [`tools::apt_binary`] when missing), started in the foreground (`-d`) on a free loopback
//! port with a configuration file of its own, and stopped by its PID when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::tools::{self, Spawned};

/// How to start a [`Tinyproxy`].
#[derive(Clone, Debug, Default)]
pub struct TinyproxyConfig {
    /// `BasicAuth user password`: requests without these credentials get 407.
    pub basic_auth: Option<(String, String)>,
    /// Ports `CONNECT` may reach (`ConnectPort`); others get 403.
    pub connect_ports: Vec<u16>,
}

/// A running tinyproxy; see the [module docs](self). It adds `Via: 1.1 tinyproxy` to the
/// requests it forwards, and logs each request line to a file ([`Tinyproxy::log`]).
#[derive(Debug)]
pub struct Tinyproxy {
    port: u16,
    dir: PathBuf,
    /// Declared after `dir` is made, dropped first: the process stops before its files go.
    process: Option<Spawned>,
}

impl Tinyproxy {
    /// Starts tinyproxy with `config`, allowing 127.0.0.1 only.
    ///
    /// # Panics
    /// When tinyproxy cannot be installed or does not listen within 10 s.
    pub fn start(config: TinyproxyConfig) -> Self {
        let binary = tools::apt_binary("tinyproxy", "tinyproxy");
        let port = tools::free_port();
        let dir =
            std::env::temp_dir().join(format!("egress-tinyproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 64\n\
             LogLevel Info\nLogFile \"{}\"\n",
            dir.join("tinyproxy.log").display()
        );
        for connect_port in &config.connect_ports {
            conf.push_str(&format!("ConnectPort {connect_port}\n"));
        }
        if config.connect_ports.is_empty() {
            // With no ConnectPort line tinyproxy allows every port; name one nobody uses.
            conf.push_str("ConnectPort 1\n");
        }
        if let Some((user, password)) = &config.basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let path = dir.join("tinyproxy.conf");
        std::fs::write(&path, conf).expect("the config file is writable");
        let mut command = Command::new(binary);
        command
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Spawned::start(command, port, Duration::from_secs(10));
        Self {
            port,
            dir,
            process: Some(process),
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, with `user:password@` when given.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// What it logged so far: each request line it received (`CONNECT host:port`, `GET
    /// http://...`) among the rest.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }

    /// Stops it now (a "proxy down" scenario); the port is then refused.
    pub fn stop(&mut self) {
        self.process = None;
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.process = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
