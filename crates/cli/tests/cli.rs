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
