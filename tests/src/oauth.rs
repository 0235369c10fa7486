//! A real OAuth 2.0 authorization server for the token tests: `oidc-provider` (the certified
//! Node.js OpenID provider, from the npm registry) configured by `tests/oauth/server.mjs` for the
//! client credentials grant, with a protected resource that asks the provider whether a token is
//! valid. Started on a free loopback port and stopped by its PID.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::tools::{Spawned, find_on_path, free_port, npm_library};

/// The oidc-provider release the tests run against.
pub const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";

/// The client that authenticates with `client_secret_basic`.
pub const BASIC_CLIENT: &str = "egress-basic";
/// The client that authenticates with `client_secret_post`.
pub const POST_CLIENT: &str = "egress-post";

/// A running authorization server with a protected resource at `/api/entities/{id}`.
#[derive(Debug)]
pub struct AuthServer {
    port: u16,
    _process: Spawned,
}

impl AuthServer {
    /// Starts the server: both clients have `secret`, and tokens live `ttl`.
    ///
    /// # Panics
    /// When node is missing, oidc-provider cannot be installed, or the server does not start.
    pub fn start(secret: &str, ttl: Duration) -> Self {
        let prefix = npm_library(OIDC_PROVIDER, "oidc-provider");
        let node = find_on_path("node")
            .expect("this test needs Node.js (`node`) to run the OAuth 2.0 server: install it");
        let port = free_port();
        let mut command = Command::new(node);
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/oauth/server.mjs"))
            .arg(port.to_string())
            .arg(ttl.as_secs().max(1).to_string())
            .env("OAUTH_CLIENT_SECRET", secret)
            .env("NPM_PREFIX", prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Spawned::start(command, port, Duration::from_secs(30));
        Self {
            port,
            _process: process,
        }
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The base URL of the protected API.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// How many token requests the provider has received.
    pub fn token_requests(&self) -> u64 {
        let body = self.control("GET", "/test/stats");
        let value: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
        value["token_requests"].as_u64().expect("a count")
    }

    /// Revokes every token the API has accepted so far (the provider forgets them).
    pub fn revoke_accepted(&self) {
        self.control("POST", "/test/revoke");
    }

    /// Every token the API has accepted.
    pub fn accepted_tokens(&self) -> Vec<String> {
        serde_json::from_str(&self.control("GET", "/test/tokens")).expect("a JSON list")
    }

    /// One request to the server's test routes, over a plain socket; returns the body.
    fn control(&self, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("the server listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout can be set");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("the request is written");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("the response is read");
        let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        body.to_owned()
    }
}
