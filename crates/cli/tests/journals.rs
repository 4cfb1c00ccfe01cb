//! `folio journals ...` against a real broker: each test starts `folio serve` (embedded
//! keyspace, fragments in its data directory) on a port of its own and drives the `folio`
//! binary as a user would, asserting what the user sees: stdout bytes, exit status, the
//! error line, and files in the store.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// What one `folio` run printed and how it exited.
struct Out {
    success: bool,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    /// Stdout as text, after checking the run succeeded.
    fn ok(&self) -> String {
        assert!(
            self.success,
            "folio failed ({:?}): {}",
            self.code, self.stderr
        );
        String::from_utf8(self.stdout.clone()).expect("utf8 stdout")
    }

    /// The error line, after checking the run failed with exactly one line on stderr.
    fn err(&self) -> String {
        assert!(
            !self.success,
            "folio succeeded, printing {}",
            String::from_utf8_lossy(&self.stdout)
        );
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {line:?}");
        assert!(line.starts_with("folio: "), "{line}");
        line.to_owned()
    }
}

/// `folio args...` with `stdin` piped in, and no `FOLIO_*` settings of the caller.
fn folio(args: &[&str], stdin: Option<&[u8]>) -> Out {
    folio_env(args, stdin, &[])
}

/// `folio args...` with `stdin` piped in and only the `FOLIO_*` settings `env`.
fn folio_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_folio"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("FOLIO_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("folio runs");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write stdin");
    }
    let out = child.wait_with_output().expect("folio exits");
    Out {
        success: out.status.success(),
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `folio serve` process, killed when dropped (also when a test panics).
struct Broker {
    child: Child,
    url: String,
    data: PathBuf,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on 127.0.0.1:0 and waits until `folio journals list` answers.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let data = data.canonicalize().expect("canonical data dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_folio"));
        for (key, _) in std::env::vars() {
            if key.starts_with("FOLIO_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--shutdown-grace", "2s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("folio serve starts");
        // The broker names its address on stderr; the rest of stderr is kept for failures.
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split_once("serving on ").map(|(_, r)| r) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = url_tx.send(url);
                }
                let mut logs = sink.lock().expect("logs");
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let mut broker = Self {
            child,
            url: String::new(),
            data,
            logs,
            _dir: dir,
        };
        broker.url = url_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("broker did not start: {}", broker.logs()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if broker.run(&["list"]).success {
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not answer List within 30 s: {}",
                broker.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `folio journals --broker URL args...`.
    fn run(&self, args: &[&str]) -> Out {
        self.run_with_input(args, None)
    }

    fn run_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut all = vec!["journals", "--broker", &self.url];
        all.extend_from_slice(args);
        folio(&all, stdin)
    }

    /// The broker's default store, `file://<data dir>/fragments/`.
    fn default_store(&self) -> String {
        format!("file://{}/", self.fragments_dir().display())
    }

    fn fragments_dir(&self) -> PathBuf {
        self.data.join("fragments")
    }

    /// Writes a spec file into the data directory's parent; returns its path.
    fn write_file(&self, name: &str, text: &[u8]) -> String {
        let path = self.data.parent().expect("parent").join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }

    /// Appends `bytes` to `journal`, returning the `begin..end` the command printed.
    fn append(&self, journal: &str, bytes: &[u8]) -> String {
        self.run_with_input(&["append", "-j", journal], Some(bytes))
            .ok()
            .trim_end()
            .to_owned()
    }

    /// Waits until `journal` has at least `count` fragments persisted; returns them.
    fn persisted(&self, journal: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed: Vec<serde_json::Value> =
                serde_json::from_str(&self.run(&["fragments", "-j", journal, "-o", "json"]).ok())
                    .expect("fragments json");
            let persisted: Vec<_> = listed
                .into_iter()
                .filter(|f| f["store"].as_str().is_some_and(|s| !s.is_empty()))
                .collect();
            if persisted.len() >= count {
                return persisted;
            }
            assert!(
                Instant::now() < deadline,
                "{journal}: {} of {count} fragments persisted after 20 s: {}",
                persisted.len(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local file of a fragment listed by `fragments -o json` (its store is a `file://`
/// directory).
fn fragment_file(fragment: &serde_json::Value) -> PathBuf {
    let store = fragment["store"].as_str().expect("store");
    let dir = store.strip_prefix("file://").expect("a file:// store");
    Path::new(dir).join(fragment["path"].as_str().expect("path"))
}

/// Bytes of every value, so reads are checked to be binary-safe.
fn binary(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

const SPECS: &str = "\
journals:
  - name: acme/clicks/part-000
    labels: [{name: app, value: clicks}]
    fragment: {compression_codec: SNAPPY}
  - name: acme/views/part-000
    replication: 1
";

#[test]
fn apply_list_and_delete_specs() {
    let broker = Broker::start();
    let specs = broker.write_file("specs.yaml", SPECS.as_bytes());

    let out = broker.run(&["apply", "-f", &specs, "--dry-run"]).ok();
    assert_eq!(
        out,
        "would create acme/clicks/part-000\nwould create acme/views/part-000\n\
         dry run: nothing was applied\n"
    );
    assert_eq!(
        broker.run(&["list"]).ok(),
        "NAME  REPLICATION  CODEC  STORES  LABELS  PRIMARY\n",
        "a dry run creates nothing"
    );

    let out = broker.run(&["apply", "-f", &specs]).ok();
    assert!(
        out.starts_with("created acme/clicks/part-000\ncreated acme/views/part-000\napplied 2 changes at revision "),
        "{out}"
    );
    let again = broker.run(&["apply", "-f", &specs]).ok();
    assert_eq!(
        again,
        "unchanged acme/clicks/part-000\nunchanged acme/views/part-000\n\
         every spec is unchanged; nothing to apply\n"
    );

    // Table: one row per journal, with the primary once the broker serves it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let table = loop {
        let table = broker.run(&["list"]).ok();
        if !table.contains("(none)") || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "REPLICATION",
            "CODEC",
            "STORES",
            "LABELS",
            "PRIMARY"
        ]
    );
    assert_eq!(
        &rows[1][..5],
        [
            "acme/clicks/part-000",
            "1",
            "SNAPPY",
            "(default)",
            "app=clicks"
        ]
    );
    assert_eq!(
        &rows[2][..5],
        ["acme/views/part-000", "1", "ZSTANDARD", "(default)", "-"]
    );
    assert!(rows[1][5].starts_with("local/"), "primary: {table}");

    // YAML is the spec document `check` prints for the same file.
    let yaml = broker.run(&["list", "-o", "yaml"]).ok();
    let checked = folio(&["journals", "check", "-f", &specs], None).ok();
    assert_eq!(yaml, checked);

    // JSON is the same document, which apply takes back unchanged.
    let json = broker.run(&["list", "-o", "json"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["journals"][0]["name"], "acme/clicks/part-000");
    assert_eq!(
        doc["journals"][0]["fragment"]["compression_codec"],
        "SNAPPY"
    );
    let json_file = broker.write_file("listed.json", json.as_bytes());
    let out = broker.run(&["apply", "-f", &json_file, "--dry-run"]).ok();
    assert!(
        out.starts_with("unchanged acme/clicks/part-000\nunchanged acme/views/part-000\n"),
        "{out}"
    );

    // Selectors filter on labels and on the name meta-labels.
    let clicks = broker.run(&["list", "-l", "app=clicks", "-o", "yaml"]).ok();
    assert!(
        clicks.contains("acme/clicks/part-000") && !clicks.contains("acme/views"),
        "{clicks}"
    );
    let views = broker
        .run(&["list", "-l", "prefix=acme/views/", "-o", "yaml"])
        .ok();
    assert!(
        views.contains("acme/views/part-000") && !views.contains("acme/clicks"),
        "{views}"
    );

    // An update names the fields it changes; the dry run applies nothing.
    let changed = broker.write_file(
        "changed.yaml",
        SPECS
            .replace(
                "{compression_codec: SNAPPY}",
                "{compression_codec: SNAPPY, retention: 1h}",
            )
            .as_bytes(),
    );
    let out = broker.run(&["apply", "-f", &changed, "--dry-run"]).ok();
    assert!(
        out.starts_with("would update acme/clicks/part-000: fragment.retention: 0s -> 1h\nunchanged acme/views/part-000\n"),
        "{out}"
    );
    let out = broker.run(&["apply", "-f", &changed]).ok();
    assert!(
        out.starts_with("updated acme/clicks/part-000: fragment.retention: 0s -> 1h\n"),
        "{out}"
    );
    assert!(out.contains("applied 1 change at revision "), "{out}");
    let yaml = broker.run(&["list", "-l", "app=clicks", "-o", "yaml"]).ok();
    assert!(yaml.contains("retention: 1h"), "{yaml}");

    // Specs from standard input, and the environment's broker.
    let new = "journals: [{name: acme/stdin/part-000}]\n";
    let out = folio_env(
        &["journals", "apply"],
        Some(new.as_bytes()),
        &[("FOLIO_BROKER", &broker.url), ("FOLIO_SPECS_FILE", "-")],
    )
    .ok();
    assert!(out.starts_with("created acme/stdin/part-000\n"), "{out}");

    // Delete, and a delete of what is gone.
    let out = broker.run(&["delete", "-j", "acme/views/part-000"]).ok();
    assert_eq!(
        out,
        "deleted acme/views/part-000 (its fragment files stay in their store)\n"
    );
    let yaml = broker.run(&["list", "-o", "yaml"]).ok();
    assert!(!yaml.contains("acme/views"), "{yaml}");
    let err = broker.run(&["delete", "-j", "acme/views/part-000"]).err();
    assert_eq!(
        err,
        "folio: deleting journal \"acme/views/part-000\": JOURNAL_NOT_FOUND: no journal has \
         this name (see `folio journals list`)"
    );
}

/// Many journals: applied in transactions of `--max-txn-size` specs, and listed in
/// full although the broker's answer comes in several messages (a List of 20,000
/// journals is over a megabyte, the size of one).
#[test]
fn many_journals_apply_in_transactions_and_list_whole() {
    let broker = Broker::start();
    let count = 20_000;
    let mut yaml = String::from("journals:\n");
    for j in 0..count {
        yaml.push_str(&format!("  - name: bulk/j{j:05}\n"));
    }
    let specs = broker.write_file("bulk.yaml", yaml.as_bytes());
    let err = broker
        .run(&["apply", "-f", &specs, "--max-txn-size", "x"])
        .err();
    assert!(err.contains("--max-txn-size"), "{err}");
    assert_eq!(
        broker.run(&["list"]).ok().lines().count(),
        1,
        "a refused flag applies nothing"
    );

    let out = broker.run(&["apply", "-f", &specs, "--max-txn-size", "6000"]);
    let stdout = out.ok();
    assert!(
        stdout.contains(&format!("applied {count} changes at revision ")),
        "{stdout}"
    );
    assert!(
        out.stderr.contains("transaction 4 of 4"),
        "progress per transaction: {}",
        out.stderr
    );
    let table = broker.run(&["list"]).ok();
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want: Vec<String> = (0..count).map(|j| format!("bulk/j{j:05}")).collect();
    assert_eq!(names, want, "every journal listed once, in order");
    let again = broker.run(&["apply", "-f", &specs]).ok();
    assert!(again.ends_with("every spec is unchanged; nothing to apply\n"));
}

#[test]
fn append_and_read_back_bytes() {
    let broker = Broker::start();
    let specs = broker.write_file("specs.yaml", SPECS.as_bytes());
    broker.run(&["apply", "-f", &specs]).ok();
    let journal = "acme/clicks/part-000";

    let first = binary(5000, 7);
    let file = broker.write_file("first.bin", &first);
    let out = broker.run(&["append", "-j", journal, &file]).ok();
    assert_eq!(out, "0..5000\n");
    // 21 bytes, with a zero and a byte that is not UTF-8.
    let second = b"\x00one line from stdin\xff".to_vec();
    assert_eq!(broker.append(journal, &second), "5000..5021");
    let empty = broker.run_with_input(&["append", "-j", journal, "-"], Some(b""));
    assert_eq!(
        empty.ok(),
        "5021..5021\n",
        "an empty append commits nothing"
    );

    let mut all = first.clone();
    all.extend_from_slice(&second);
    let read = broker.run(&["read", "-j", journal]);
    assert!(read.success, "{}", read.stderr);
    assert_eq!(read.stdout, all, "the whole journal, byte for byte");
    let slice = broker.run(&["read", "-j", journal, "--offset", "4990", "--end", "5010"]);
    assert!(slice.success, "{}", slice.stderr);
    assert_eq!(slice.stdout, &all[4990..5010]);
    let tail_of = broker.run(&["read", "-j", journal, "--offset", "5000"]);
    assert_eq!(tail_of.stdout, second);
    let blocking = broker.run(&[
        "read", "-j", journal, "--block", "--offset", "10", "--end", "20",
    ]);
    assert_eq!(
        blocking.stdout,
        &all[10..20],
        "--block with --end ends at --end"
    );

    // An append expecting another write head is refused by name, and writes nothing.
    let err = broker
        .run_with_input(
            &["append", "-j", journal, "--expect-offset", "3"],
            Some(b"x"),
        )
        .err();
    assert_eq!(
        err,
        "folio: append \"acme/clicks/part-000\": WRONG_APPEND_OFFSET: --expect-offset 3 is not \
         the journal's write head 5021; pass --expect-offset 5021, or 0 to append wherever the \
         head is"
    );
    assert_eq!(
        broker.append(journal, b"!").as_str(),
        "5021..5022",
        "the refused append left the head alone"
    );
    let out = broker.run_with_input(
        &["append", "-j", journal, "--expect-offset", "5022"],
        Some(b"?"),
    );
    assert_eq!(
        out.ok(),
        "5022..5023\n",
        "the head the error named is accepted"
    );

    // --tail starts at the write head and follows new appends.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args([
            "journals",
            "--broker",
            &broker.url,
            "read",
            "-j",
            journal,
            "--tail",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail starts");
    let mut stdout = tail.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.ends_with(b"new\n") && Instant::now() < deadline {
        // Appends until the tail, which may still be connecting, shows one.
        broker.append(journal, b"new\n");
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(500)) {
            seen.extend(bytes);
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        seen.ends_with(b"new\n"),
        "tail saw {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        !seen.windows(5).any(|w| w == b"stdin"),
        "a tail starts at the write head, not at 0: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn reads_past_the_write_head_name_it() {
    let broker = Broker::start();
    let specs = broker.write_file("specs.yaml", SPECS.as_bytes());
    broker.run(&["apply", "-f", &specs]).ok();
    let journal = "acme/clicks/part-000";

    // An empty journal's head is 0.
    let err = broker.run(&["read", "-j", journal, "--offset", "5"]).err();
    assert_eq!(
        err,
        "folio: read \"acme/clicks/part-000\": --offset 5 is past the journal's write head 0; \
         pass an offset up to 0, or --block to wait for the journal to reach it"
    );

    assert_eq!(broker.append(journal, b"0123456789"), "0..10");
    let at_head = broker.run(&["read", "-j", journal, "--offset", "10"]);
    assert_eq!(
        at_head.ok(),
        "",
        "at the head there is nothing yet, and that is no error"
    );
    let out = broker.run(&["read", "-j", journal, "--offset", "11", "--end", "13"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        out.err(),
        "folio: read \"acme/clicks/part-000\": --offset 11 is past the journal's write head 10; \
         pass an offset up to 10, or --block to wait for the journal to reach it"
    );

    // With --block the same read waits for the journal to get there.
    let blocked = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["journals", "--broker", &broker.url, "read", "-j", journal])
        .args(["--offset", "11", "--end", "13", "--block"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("blocking read starts");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(broker.append(journal, b"abcd"), "10..14");
    let out = blocked
        .wait_with_output()
        .expect("blocking read ends at --end");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"bc");
}

#[test]
fn stdin_appends_right_after_apply_are_retried() {
    let broker = Broker::start();
    // The journal is assigned a moment after its spec is applied; until then the broker
    // answers NO_JOURNAL_PRIMARY_BROKER, which standard input must ride out too.
    for round in 0..6 {
        let journal = format!("acme/race/part-{round:03}");
        let specs = broker.write_file(
            "race.yaml",
            format!("journals: [{{name: {journal}}}]\n").as_bytes(),
        );
        broker.run(&["apply", "-f", &specs]).ok();
        let line = format!("round {round}\n");
        assert_eq!(
            broker.append(&journal, line.as_bytes()),
            format!("0..{}", line.len())
        );
        assert_eq!(broker.run(&["read", "-j", &journal]).ok(), line);
    }
}

#[test]
fn bad_input_is_one_line_naming_the_problem() {
    let broker = Broker::start();

    let err = broker
        .run_with_input(&["append", "-j", "acme/missing/part-000"], Some(b"x"))
        .err();
    assert_eq!(
        err,
        "folio: append \"acme/missing/part-000\": JOURNAL_NOT_FOUND (no journal has this name; \
         see `folio journals list`)"
    );
    let err = broker.run(&["read", "-j", "acme/missing/part-000"]).err();
    assert!(err.contains("JOURNAL_NOT_FOUND"), "{err}");
    let err = broker
        .run(&["fragments", "-j", "acme/missing/part-000"])
        .err();
    assert!(err.contains("JOURNAL_NOT_FOUND"), "{err}");

    let err = broker
        .run_with_input(&["append", "-j", "/abs/name"], Some(b"x"))
        .err();
    assert!(err.starts_with("folio: invalid journal name"), "{err}");
    assert!(err.contains("/abs/name"), "{err}");

    let bad = broker.write_file(
        "bad.yaml",
        b"journals:\n  - name: acme/x\n    replicaton: 3\n",
    );
    let err = broker.run(&["apply", "-f", &bad]).err();
    assert!(err.starts_with("folio: reading spec file"), "{err}");
    assert!(err.contains("unknown field `replicaton`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = broker
        .run(&["apply", "-f", "/nonexistent/specs.yaml"])
        .err();
    assert!(err.contains("does not exist"), "{err}");
    let twice = broker.write_file(
        "twice.yaml",
        b"journals:\n  - name: acme/x\n  - name: acme/x\n",
    );
    let err = broker.run(&["apply", "-f", &twice]).err();
    assert!(err.contains("\"acme/x\" is listed twice"), "{err}");
    assert_eq!(
        broker.run(&["list"]).ok().lines().count(),
        1,
        "failed applies create nothing"
    );

    let err = broker.run(&["list", "-l", "app in eu"]).err();
    assert!(err.starts_with("folio: parsing --selector"), "{err}");
    assert!(err.contains("expected '('"), "{err}");

    let err = broker
        .run(&["read", "-j", "acme/x", "--retry-for", "soon"])
        .err();
    assert!(
        err.starts_with("folio: invalid value 'soon' for '--retry-for <RETRY_FOR>'"),
        "{err}"
    );
    let err = folio_env(
        &["journals", "--broker", &broker.url, "read", "-j", "acme/x"],
        None,
        &[("FOLIO_RETRY_FOR", "soon")],
    )
    .err();
    assert!(
        err.contains("'--retry-for <RETRY_FOR>'"),
        "from the environment: {err}"
    );

    let err = broker
        .run(&["read", "-j", "acme/x", "--offset", "1", "--tail"])
        .err();
    assert!(
        err.contains("'--offset <OFFSET>' cannot be used with '--tail'"),
        "{err}"
    );

    // No broker at all: a clear line, quickly.
    let err = folio(
        &["journals", "--broker", "http://127.0.0.1:1", "list"],
        None,
    )
    .err();
    assert!(
        err.starts_with("folio: listing journals: cannot reach the broker at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn fragments_list_the_files_persisted_in_the_store() {
    let broker = Broker::start();
    let specs = broker.write_file(
        "specs.yaml",
        b"journals:\n  - name: acme/small/part-000\n    fragment: {length: 1KiB, compression_codec: GZIP}\n",
    );
    broker.run(&["apply", "-f", &specs]).ok();
    let journal = "acme/small/part-000";
    // A fragment closes at the first append after it reached 1 KiB.
    let mut all = Vec::new();
    for seed in 0..4u8 {
        let chunk = binary(1500, seed);
        broker.append(journal, &chunk);
        all.extend(chunk);
    }
    let persisted = broker.persisted(journal, 3);
    for (i, fragment) in persisted.iter().enumerate() {
        assert_eq!(fragment["begin"], i as i64 * 1500);
        assert_eq!(fragment["end"], (i as i64 + 1) * 1500);
        assert_eq!(fragment["size"], 1500);
        assert_eq!(fragment["codec"], "GZIP");
        assert_eq!(fragment["store"], broker.default_store().as_str());
        let path = fragment["path"].as_str().expect("path");
        assert!(
            path.starts_with("acme/small/part-000/") && path.ends_with(".gz"),
            "{path}"
        );
        let file = fragment_file(fragment);
        assert!(
            file.starts_with(broker.fragments_dir()),
            "{}",
            file.display()
        );
        assert!(file.is_file(), "{} exists", file.display());
    }

    let table = broker.run(&["fragments", "-j", journal]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["BEGIN", "END", "SIZE", "CODEC", "MOD_TIME", "STORE", "PATH"]
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&first[..4], ["0", "1500", "1500", "GZIP"]);
    assert!(
        first[4].ends_with('Z'),
        "mod time in RFC 3339: {}",
        first[4]
    );
    assert_eq!(first[5], broker.default_store());
    assert_eq!(first[6], persisted[0]["path"].as_str().expect("path"));
    // The last append is still in the broker's memory: no store, no mod time yet.
    let last: Vec<&str> = lines.last().expect("rows").split_whitespace().collect();
    assert_eq!(&last[..6], ["4500", "6000", "1500", "GZIP", "-", "-"]);

    let signed = broker
        .run(&["fragments", "-j", journal, "--signed-urls"])
        .ok();
    assert!(
        signed.lines().next().is_some_and(|h| h.ends_with("URL")),
        "{signed}"
    );

    // Reads cross persisted fragments and the open one alike.
    let read = broker.run(&["read", "-j", journal]);
    assert_eq!(read.stdout, all);
    let slice = broker.run(&["read", "-j", journal, "--offset", "1400", "--end", "3100"]);
    assert_eq!(slice.stdout, &all[1400..3100]);
}

#[test]
fn health_reports_each_store() {
    let broker = Broker::start();
    let store = broker.default_store();
    let out = broker.run(&["health", "--store", &store]).ok();
    assert_eq!(out, format!("{store}: OK\n"));

    // A store no spec names is not probed (a probe writes with the broker's credentials),
    // and nothing is created there.
    let stray = broker.data.parent().expect("parent").join("stray");
    let stray_store = format!("file://{}/", stray.display());
    let err = broker.run(&["health", "--store", &stray_store]);
    let line = err.err();
    assert_eq!(
        line,
        format!("folio: checking store health: 1 of 1 fragment stores unhealthy: {stray_store}")
    );
    let text = String::from_utf8_lossy(&err.stdout);
    assert!(
        text.starts_with(&format!("{stray_store}: ")) && text.contains("is not a configured store"),
        "{text}"
    );
    assert!(!stray.exists(), "the probe created {}", stray.display());

    // Without --store: every store the specs name.
    let own = broker.data.parent().expect("parent").join("own");
    let own_store = format!("file://{}/", own.display());
    let specs = broker.write_file(
        "specs.yaml",
        format!(
            "journals:\n  - name: acme/own/part-000\n    fragment: {{stores: [\"{own_store}\"]}}\n  - name: acme/plain/part-000\n"
        )
        .as_bytes(),
    );
    broker.run(&["apply", "-f", &specs]).ok();
    let out = broker.run(&["health"]).ok();
    assert_eq!(
        out,
        format!(
            "note: 1 journal uses the broker's default store, which its API does not name; \
             pass --store URL to probe it\n{own_store}: OK\n"
        )
    );
    let err = broker.run(&["health", "-l", "prefix=acme/plain/"]).err();
    assert!(err.contains("no spec names a store"), "{err}");

    // Stores that specs name are probed, and their failures explained.
    let s3 = "s3://bucket/x/?endpoint=http://127.0.0.1:9&region=us-east-1&access_key_id=a&secret_access_key=hush";
    let forbidden = "file:///proc/forbidden-dir/";
    let specs = broker.write_file(
        "broken.yaml",
        format!(
            "journals:\n  - name: acme/s3/part-000\n    fragment: {{stores: [\"{s3}\"]}}\n  - name: acme/proc/part-000\n    fragment: {{stores: [\"{forbidden}\"]}}\n"
        )
        .as_bytes(),
    );
    broker.run(&["apply", "-f", &specs]).ok();
    let out = broker.run(&[
        "health", "--store", &store, "--store", s3, "--store", forbidden,
    ]);
    let line = out.err();
    assert!(line.contains("2 of 3 fragment stores unhealthy"), "{line}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("{store}: OK\n")), "{text}");
    assert!(text.contains("FRAGMENT_STORE_UNHEALTHY"), "{text}");
    assert!(
        text.contains("check that the store endpoint is reachable"),
        "{text}"
    );
    assert!(text.contains("cannot create directory"), "{text}");
    assert!(
        !text.contains("hush") && !line.contains("hush"),
        "secrets are redacted: {text}"
    );
}

#[test]
fn prune_deletes_files_older_than_the_retention() {
    let broker = Broker::start();
    let own = broker.data.parent().expect("parent").join("own");
    let own_store = format!("file://{}/", own.display());
    let specs = broker.write_file(
        "specs.yaml",
        format!(
            "journals:
  - name: acme/prune/own
    labels: [{{name: app, value: prune}}]
    fragment: {{length: 1KiB, retention: 1s, stores: [\"{own_store}\"]}}
  - name: acme/prune/default
    labels: [{{name: app, value: prune}}]
    fragment: {{length: 1KiB, retention: 1s}}
  - name: acme/prune/keep
    labels: [{{name: app, value: prune}}]
    fragment: {{length: 1KiB}}
"
        )
        .as_bytes(),
    );
    broker.run(&["apply", "-f", &specs]).ok();
    let journals = ["acme/prune/own", "acme/prune/default", "acme/prune/keep"];
    for journal in journals {
        for seed in 0..3u8 {
            broker.append(journal, &binary(1500, seed));
        }
    }
    let files: Vec<Vec<PathBuf>> = journals
        .iter()
        .map(|j| broker.persisted(j, 2).iter().map(fragment_file).collect())
        .collect();
    assert!(files[0].iter().all(|f| f.starts_with(&own)), "{files:?}");
    // Mod times are in whole seconds: 2+ s puts every file past a 1 s retention.
    std::thread::sleep(Duration::from_millis(2200));

    let out = broker.run(&["prune", "-l", "app=prune", "--dry-run"]).ok();
    let mut want = String::new();
    for file in &files[0] {
        want.push_str(&format!("would delete file://{}\n", file.display()));
    }
    assert!(out.contains(&want), "{out}\nwants\n{want}");
    assert!(
        out.contains("skipped acme/prune/default: its spec names no store; pass --store"),
        "{out}"
    );
    assert!(
        out.contains("skipped acme/prune/keep: no fragment.retention"),
        "{out}"
    );
    assert!(
        out.ends_with("would delete 2 fragment files (3000 bytes of content) of 1 journal; skipped 2 journals\n"),
        "{out}"
    );
    assert!(
        files.iter().flatten().all(|f| f.is_file()),
        "a dry run deletes nothing"
    );

    let store = broker.default_store();
    let out = broker
        .run(&["prune", "-l", "app=prune", "--store", &store])
        .ok();
    for file in files[0].iter().chain(&files[1]) {
        assert!(
            out.contains(&format!("deleted file://{}\n", file.display())),
            "{out}"
        );
        assert!(!file.exists(), "{} was deleted", file.display());
    }
    assert!(
        out.ends_with(
            "deleted 4 fragment files (6000 bytes of content) of 2 journals; skipped 1 journal\n"
        ),
        "{out}"
    );
    assert!(
        files[2].iter().all(|f| f.is_file()),
        "no retention, nothing deleted"
    );

    let err = broker.run(&["prune", "-l", "app in prune"]).err();
    assert!(err.starts_with("folio: parsing --selector"), "{err}");
}
