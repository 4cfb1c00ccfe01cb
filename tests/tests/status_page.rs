//! The status page at `/` of the broker's HTTP port, in a real browser: headless Chromium
//! (Debian's `chromium`, which `scripts/test.sh` installs) loads it from a broker under
//! load, takes a screenshot, and dumps the DOM its script rendered: the journals' names
//! and non-zero append rates must be there.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use folio_protocol::{AppendRequest, SpecsDocument, Status};
use folio_tests::{append_messages, unique_name};

/// The browser: `FOLIO_CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> String {
    let path = std::env::var("FOLIO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: this test needs headless Chromium (scripts/test.sh installs Debian's \
         `chromium`; or set FOLIO_CHROMIUM)"
    );
    path
}

/// Runs headless Chromium on `url` with `mode` (`--screenshot=...` or `--dump-dom`) and
/// returns its stdout. Its process group is killed if it runs past 90 s.
fn browse(url: &str, mode: &str, profile: &std::path::Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1400",
            // Lets the page's script fetch /status and render before the DOM is taken.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting chromium");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(90);
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut out).ok();
        out
    });
    loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                std::io::Read::read_to_string(&mut stderr, &mut err).ok();
            }
            assert!(status.success(), "chromium {mode} failed: {status}: {err}");
            return reader.join().expect("reader thread");
        }
        if Instant::now() > deadline {
            // The browser and its helpers, by the group of the process this test started.
            let _ = Command::new("kill")
                .args(["-9", &format!("-{pid}")])
                .status();
            let _ = child.wait();
            panic!("chromium {mode} ran past 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `attr="..."` in the first element of `html` whose opening tag contains
/// `marker`.
fn attribute(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let value_at = tag.find(&key)? + key.len();
    let len = tag[value_at..].find('"')?;
    Some(tag[value_at..value_at + len].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_journals_and_rates_in_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, http) =
        folio_tests::start_with_http(&dir.path().join("broker"), &[]).expect("start broker");
    let mut client = broker.client().await.expect("client");

    let journals: Vec<String> = (0..3)
        .map(|i| unique_name(&format!("status/clicks-{i}")))
        .collect();
    let yaml = folio_tests::specs_yaml(&journals, "{ length: 1MiB, compression_codec: NONE }");
    folio_tests::create_journals(&mut client, SpecsDocument::from_yaml(&yaml).expect("specs"))
        .await;

    // Load: 16 KiB appends, round robin over the journals, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, journals, mut client) = (stop.clone(), journals.clone(), client.clone());
        tokio::spawn(async move {
            let content = vec![b'x'; 16 << 10];
            let mut appended = 0u64;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let first = AppendRequest {
                    journal: journals[i % journals.len()].clone(),
                    ..Default::default()
                };
                let messages = append_messages(first, &content);
                if let Ok(response) = client.append(futures::stream::iter(messages)).await
                    && response.into_inner().status() == Status::Ok
                {
                    appended += content.len() as u64;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            appended
        })
    };

    // The sampler needs two samples (2 s apart) of each journal for a rate.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = reqwest::get(format!("{http}/status"))
            .await
            .expect("GET /status")
            .text()
            .await
            .expect("status body");
        let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let rated = status["journals"]
            .as_array()
            .expect("journals")
            .iter()
            .filter(|j| j["append_rate"].as_f64().unwrap_or(0.0) > 0.0)
            .count();
        if rated == journals.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no append rate for every journal after 30 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let page = format!("{http}/");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (page_for_shot, shot_arg, profile) = (
        page.clone(),
        format!("--screenshot={}", shot.display()),
        dir.path().join("chromium-shot"),
    );
    tokio::task::spawn_blocking(move || browse(&page_for_shot, &shot_arg, &profile))
        .await
        .expect("screenshot");
    let profile = dir.path().join("chromium-dom");
    let dom = tokio::task::spawn_blocking(move || browse(&page, "--dump-dom", &profile))
        .await
        .expect("dump DOM");
    stop.store(true, Ordering::Relaxed);
    let appended = load.await.expect("load task");
    assert!(appended > 0, "the load appended");

    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    assert!(png.len() > 10_000, "a rendered page, not a blank one");
    println!("status page screenshot: {}", shot.display());

    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script rendered a status: {dom}"
    );
    for journal in &journals {
        let marker = format!("data-journal=\"{journal}\"");
        let rate = attribute(&dom, &marker, "data-rate")
            .unwrap_or_else(|| panic!("a row for {journal}: {dom}"));
        let rate: f64 = rate.parse().expect("a numeric rate");
        assert!(rate > 0.0, "{journal} shows a non-zero append rate");
        assert!(
            dom.contains(&format!("<td class=\"journal\">{journal}</td>")),
            "{journal}'s name is shown"
        );
    }
    let now: f64 = attribute(&dom, "id=\"rate-now\"", "data-rate")
        .expect("the current rate")
        .parse()
        .expect("numeric");
    assert!(now > 0.0, "the chart's current rate is non-zero");
    assert!(dom.contains("<polyline"), "the rate chart is drawn");
    assert!(dom.contains(">local</td>"), "the member's zone is listed");
    assert!(dom.contains(">healthy</td>"), "the store's health is shown");
}

#[test]
fn attributes_are_read_from_the_marked_tag() {
    let html =
        r#"<tr data-journal="a/b" data-rate="12.5"><td>x</td></tr><span id="n" data-rate="0">"#;
    assert_eq!(
        attribute(html, "data-journal=\"a/b\"", "data-rate").as_deref(),
        Some("12.5")
    );
    assert_eq!(
        attribute(html, "id=\"n\"", "data-rate").as_deref(),
        Some("0")
    );
    assert_eq!(attribute(html, "id=\"missing\"", "data-rate"), None);
}
