//! The example service run as an operator runs it: the binary `cargo test` builds, started as a
//! process, stopped by a signal sent to its PID, its logs read as JSON lines and its `/metrics`
//! checked by Prometheus's own `promtool`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egress_tests::server::{FaultServer, Reply};
use egress_tests::tools::{Spawned, apt_binary, cargo_example};
use serde_json::Value;

/// The running service: its address, its stderr (the logs) as it grows, and its process.
struct Service {
    address: SocketAddr,
    logs: Arc<Mutex<String>>,
    process: Spawned,
}

impl Service {
    /// Starts the service with `env` (on top of `SERVICE_LISTEN=127.0.0.1:0`, JSON logs at
    /// debug for egress) from the folder `cwd`, with the default configuration file unless
    /// `args` names one, and waits for its `listening on` line.
    fn start(env: &[(&str, &str)], cwd: &Path, args: &[&str]) -> Service {
        let mut command = Command::new(cargo_example("service"));
        command
            .args(args)
            .current_dir(cwd)
            .env("SERVICE_LISTEN", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,egress_core=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the service starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let process = Spawned::adopt(child, "service");
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("the service writes its address");
        let address = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address in {first:?}; logs: {}", logs.lock().unwrap()))
            .parse()
            .expect("a socket address");
        Service {
            address,
            logs,
            process,
        }
    }

    /// `GET path` over HTTP/1.1 (`Connection: close`): the status and the body.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.address, path)
    }

    /// Starts `GET /entities/e-1` on a thread and returns once `upstream` has received the
    /// service's call for it: the call is in flight.
    fn call_in_flight(
        &self,
        upstream: &FaultServer,
    ) -> std::thread::JoinHandle<std::io::Result<(u16, String)>> {
        let address = self.address;
        let call = std::thread::spawn(move || get(address, "/entities/e-1"));
        let started = Instant::now();
        while upstream.requests().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the upstream never saw the call"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        call
    }

    /// The log lines so far, parsed.
    fn log_lines(&self) -> Vec<Value> {
        let logs = self.logs.lock().unwrap().clone();
        logs.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Waits for the process to exit after a signal; its exit code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let status = self.process.wait_for_exit(within);
        let status = status.unwrap_or_else(|| {
            panic!(
                "the service did not exit within {within:?}; logs:\n{}",
                self.logs.lock().unwrap()
            )
        });
        status.code()
    }
}

/// A plain HTTP/1.1 `GET` (the test's own client; the service is what is under test).
fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn entity(id: &str) -> Reply {
    Reply::json(
        200,
        &format!(r#"{{"id":"{id}","name":"Ada","status":"active","version":1}}"#),
    )
}

/// Kubernetes, systemd and `docker stop` send SIGTERM: the call in flight (its upstream takes
/// 1.5 s) still gets its answer, and the process exits 0.
#[test]
fn sigterm_lets_the_call_in_flight_finish_and_the_process_exits_0() {
    let upstream = FaultServer::start(FaultServer::always(
        entity("e-1").delay(Duration::from_millis(1500)),
    ));
    let base = upstream.url("");
    let mut service = Service::start(&[("ENTITIES_BASE_URL", &base)], Path::new("."), &[]);
    let call = service.call_in_flight(&upstream);
    std::thread::sleep(Duration::from_millis(400));
    service.process.signal("TERM");
    let (status, body) = call
        .join()
        .unwrap()
        .expect("the call in flight is answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"Ada\""), "{body}");
    assert_eq!(service.exit_code(Duration::from_secs(20)), Some(0));
    let lines = service.log_lines();
    let shutting_down = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
        .unwrap_or_else(|| panic!("no shutdown line: {lines:#?}"));
    assert_eq!(shutting_down["fields"]["signal"], "SIGTERM");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "stopped: every request in flight finished"),
        "{lines:#?}"
    );
}

/// A client that sent half a request head does not keep the process alive past the
/// header-read timeout (here 1 s, with 60 s for requests in flight).
#[test]
fn a_half_sent_request_head_is_closed_at_the_header_read_timeout() {
    let mut service = Service::start(
        &[
            ("ENTITIES_BASE_URL", "http://127.0.0.1:9"),
            ("SERVICE_HEADER_READ_TIMEOUT", "1s"),
            ("SERVICE_SHUTDOWN_TIMEOUT", "60s"),
        ],
        Path::new("."),
        &[],
    );
    let mut slow = TcpStream::connect(service.address).unwrap();
    slow.write_all(b"GET /entities/e-1 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    service.process.signal("TERM");
    assert_eq!(service.exit_code(Duration::from_secs(20)), Some(0));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the half-sent head held the shutdown for {took:?}"
    );
    // The server closed the connection (hyper answers 408 to a head that timed out, or
    // closes): reading ends instead of blocking.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(read.is_ok(), "the connection was closed: {read:?}");
}

/// Requests still running when the shutdown timeout passes are cut off; the process still
/// exits 0 (a stopped service is not a crashed one) and says so in its log.
#[test]
fn the_shutdown_timeout_closes_what_is_left() {
    let upstream = FaultServer::start(FaultServer::always(
        entity("e-1").delay(Duration::from_secs(8)),
    ));
    let base = upstream.url("");
    let mut service = Service::start(
        &[
            ("ENTITIES_BASE_URL", &base),
            ("ENTITIES_DEADLINE", "20s"),
            ("SERVICE_SHUTDOWN_TIMEOUT", "300ms"),
        ],
        Path::new("."),
        &[],
    );
    let call = service.call_in_flight(&upstream);
    service.process.signal("INT");
    assert_eq!(service.exit_code(Duration::from_secs(6)), Some(0));
    assert!(
        call.join().unwrap().is_err(),
        "the cut-off call gets no answer"
    );
    let lines = service.log_lines();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("shutdown timeout passed"))),
        "{lines:#?}"
    );
}

/// The JSON log of a retried call: every egress line names the call by its correlation ID (the
/// inbound one), and the retried success says how it ended at INFO.
#[test]
fn json_logs_name_the_call_on_every_egress_line() {
    let upstream = FaultServer::start(FaultServer::script([Reply::status(503), entity("e-1")]));
    let base = upstream.url("");
    let mut service = Service::start(&[("ENTITIES_BASE_URL", &base)], Path::new("."), &[]);
    let mut stream = TcpStream::connect(service.address).unwrap();
    write!(
        stream,
        "GET /entities/e-1 HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: op-4711\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    service.process.signal("TERM");
    assert_eq!(service.exit_code(Duration::from_secs(20)), Some(0));
    let lines = service.log_lines();
    let egress: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("egress"))
        })
        .collect();
    assert!(egress.len() >= 4, "{lines:#?}");
    for line in &egress {
        assert_eq!(line["fields"]["correlation_id"], "op-4711", "{line}");
    }
    let outcome = egress
        .iter()
        .find(|l| l["fields"]["message"] == "call succeeded")
        .unwrap_or_else(|| panic!("{egress:#?}"));
    assert_eq!(outcome["level"], "INFO");
    assert_eq!(outcome["fields"]["attempts"], 2);
}

/// `/metrics` is valid Prometheus text (checked by `promtool check metrics`, from the OS's
/// `prometheus` package), with OpenTelemetry's names turned into Prometheus's: the durations
/// are `_seconds` histograms with buckets, counters end in `_total`, the port and the vendor
/// are labels, and no label is empty.
#[test]
fn metrics_are_valid_prometheus_text_with_opentelemetry_names() {
    let promtool = apt_binary("promtool", "prometheus");
    let upstream = FaultServer::start(FaultServer::script([Reply::status(503), entity("e-1")]));
    let base = upstream.url("");
    let port = base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let mut service = Service::start(&[("ENTITIES_BASE_URL", &base)], Path::new("."), &[]);
    assert_eq!(service.get("/entities/e-1").unwrap().0, 200);
    let (status, exposition) = service.get("/metrics").unwrap();
    assert_eq!(status, 200);
    for expected in [
        "# TYPE http_client_request_duration_seconds histogram",
        "# TYPE egress_call_duration_seconds histogram",
        "# TYPE egress_retries_total counter",
        "http_client_request_duration_seconds_bucket{",
        "le=\"0.005\"",
        "egress_service=\"entities\"",
        &format!("server_port=\"{port}\""),
        "egress_outcome=\"success\"",
        "network_protocol_version=\"1.1\"",
    ] {
        assert!(
            exposition.contains(expected),
            "no {expected} in\n{exposition}"
        );
    }
    assert!(
        !exposition.contains("=\"\""),
        "an empty label:\n{exposition}"
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    service.process.signal("TERM");
    assert_eq!(service.exit_code(Duration::from_secs(20)), Some(0));
}

/// The documented command works from any folder (the default configuration file is found
/// beside the example), and a start-up error is one readable line, not a Debug dump.
#[test]
fn the_default_config_is_found_from_any_folder_and_errors_are_readable() {
    let mut service = Service::start(&[], Path::new("/"), &[]);
    service.process.signal("TERM");
    assert_eq!(service.exit_code(Duration::from_secs(20)), Some(0));

    let output = Command::new(cargo_example("service"))
        .arg("/nonexistent/service.toml")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("the service starts");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "service: /nonexistent/service.toml: No such file or directory (os error 2)"
    );
    let bad = Command::new(cargo_example("service"))
        .env("SERVICE_SHUTDOWN_TIMEOUT", "soon")
        .output()
        .expect("the service starts");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.starts_with("service: SERVICE_SHUTDOWN_TIMEOUT: ")
            && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
