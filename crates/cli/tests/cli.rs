//! The `folio` binary: spec files are checked with errors that name what is wrong.

use std::process::Command;

fn folio(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(args)
        .output()
        .expect("folio runs")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write spec file");
    path.display().to_string()
}

#[test]
fn check_prints_specs_with_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        &dir,
        "specs.yaml",
        "journals:\n  - name: acme/clicks/part-000\n    labels: [{name: app, value: clicks}]\n  - name: acme/views/part-000\n",
    );
    let out = folio(&["journals", "check", "-f", &file, "-l", "app=clicks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("acme/clicks/part-000"), "{text}");
    assert!(!text.contains("acme/views"), "selector filters: {text}");
    assert!(text.contains("compression_codec: ZSTANDARD"), "{text}");
    assert!(text.contains("refresh_interval: 5m"), "{text}");
}

#[test]
fn bad_input_is_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "journals:\n  - name: acme/x\n    replicaton: 3\n",
            "unknown field `replicaton`",
        ),
        ("journals:\n  - name: /abs/x\n", "journal \"/abs/x\".name"),
        (
            "journals:\n  - name: acme/x\n    fragment: {length: 10}\n",
            "fragment.length: 10",
        ),
    ];
    for (text, want) in cases {
        let file = write(&dir, "bad.yaml", text);
        let out = folio(&["journals", "check", "-f", &file]);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).expect("utf8");
        assert!(err.starts_with("folio: reading spec file"), "{err}");
        assert!(err.contains(want), "{err} should contain {want}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let file = write(&dir, "ok.yaml", "journals: []\n");
    let out = folio(&["journals", "check", "-f", &file, "-l", "app in eu"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert!(
        err.contains("parsing --selector") && err.contains("expected '('"),
        "{err}"
    );

    let out = folio(&["journals", "check", "-f", "/nonexistent/specs.yaml"]);
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn check_config_validates_every_setting_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("never-created");
    let data = data.to_str().expect("utf-8");
    let out = folio(&[
        "serve",
        "--check-config",
        "--data-dir",
        data,
        "--etcd",
        "http://etcd-0.etcd:2379,etcd-1.etcd:2379",
        "--endpoint",
        "http://10.1.2.3:8080",
        "--listen",
        "0.0.0.0:8080",
        "--zone",
        "zone-a",
        "--id",
        "broker-0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("configuration OK: listen 0.0.0.0:8080, etcd "),
        "{text}"
    );
    assert!(text.contains("member zone-a#broker-0"), "{text}");
    assert!(
        text.ends_with(
            "HTTP port off, TLS off, authorization off, connections at most 128 \
             (268435456 bytes of HTTP/2 windows set aside from the budget)\n"
        ),
        "{text}"
    );
    assert!(!std::path::Path::new(data).exists(), "nothing was created");

    // Each bad setting, by flag or by variable, is named with its value.
    /// Flags, variables, and what the error must say.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 21] = [
        (
            &["--memory-budget", "lots"],
            &[],
            "--memory-budget: \"lots\"",
        ),
        (
            &[],
            &[("FOLIO_LEASE_TTL", "1s")],
            "--lease-ttl: 1s is too short",
        ),
        (
            &["--listen", "nope"],
            &[],
            "--listen: \"nope\" is not host:port",
        ),
        (
            &["--endpoint", "10.0.0.1:8080"],
            &[],
            "--endpoint: \"10.0.0.1:8080\"",
        ),
        (&["--prefix", "folio/"], &[], "--prefix: "),
        (&["--store", "s3://bucket/no-slash"], &[], "--store: "),
        (
            &[],
            &[("FOLIO_LOG_LEVEL", "info,=x[")],
            "--log-level: \"info,=x[\"",
        ),
        (
            &[],
            &[("FOLIO_HTTP_LISTEN", "localhost:8081")],
            "--http-listen: \"localhost:8081\" is not an IP address and port",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:8080",
                "--http-listen",
                "127.0.0.1:8080",
            ],
            &[],
            "--http-listen: \"127.0.0.1:8080\" is also --listen",
        ),
        (
            &[
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            &[],
            "--tls-cert: /nonexistent/cert.pem: No such file",
        ),
        (
            &["--tls-client-auth"],
            &[],
            "--tls-client-auth: requiring client certificates needs the CA",
        ),
        (
            &["--auth-keys", "c2VjcmV0,not*base64"],
            &[],
            "--auth-keys: key 1 is not standard base64",
        ),
        (
            &[],
            &[("FOLIO_AUTH_KEYS", "AA==")],
            "--auth-keys: at least one signing key is needed",
        ),
        (
            &["--auth-keys-file", "/nonexistent/keys"],
            &[],
            "--auth-keys-file: reading /nonexistent/keys",
        ),
        (
            &["--max-streams", "0"],
            &[],
            "--max-streams <MAX_STREAMS>': 0 is not in 1..",
        ),
        (
            &["--max-connections", "512"],
            &[],
            "--max-connections: 512 connections x 2097152 bytes of HTTP/2 window = 1073741824 \
             bytes, more than half of --memory-budget (1073741824 bytes)",
        ),
        (
            &[],
            &[("FOLIO_HTTP2_STREAM_WINDOW", "4MiB")],
            "--http2-stream-window: 4194304 bytes is larger than --http2-connection-window (2097152 bytes)",
        ),
        (
            &["--http2-connection-window", "16KiB"],
            &[],
            "--http2-connection-window: 16384 bytes is below HTTP/2's smallest window, 65535 bytes",
        ),
        (
            &["--http2-max-frame-size", "8KiB"],
            &[],
            "--http2-max-frame-size: 8192 bytes is outside HTTP/2's frame sizes, 16384 to 16777215 bytes",
        ),
        (
            &[],
            &[("FOLIO_HTTP2_MAX_FRAME_SIZE", "16MiB")],
            "--http2-max-frame-size: 16777216 bytes is outside HTTP/2's frame sizes",
        ),
        (
            &["--http2-stream-window", "3GiB"],
            &[],
            "--http2-stream-window: \"3GiB\" is over HTTP/2's largest window",
        ),
    ];
    for (args, env, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_folio"));
        command
            .args(["serve", "--check-config", "--data-dir", data])
            .args(args)
            .envs(env.iter().copied());
        let out = command.output().expect("folio runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} was accepted");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // An unknown flag, or a log format there is none of, is a usage error.
    let out = folio(&["serve", "--check-config", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = folio(&["serve", "--check-config", "--log-format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("FOLIO_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("folio serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.expect("a line")).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut objects = Vec::new();
    while objects.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        // The one plain line is the banner the broker prints for people.
        if line.starts_with("folio: ") {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        objects.push(value);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(objects.len(), 2, "two log lines within 20 s");
    for object in &objects {
        assert_eq!(object["level"], "INFO", "{object}");
        assert!(
            object["message"].is_string() && object["target"].is_string(),
            "{object}"
        );
    }
}
