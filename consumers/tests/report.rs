//! The retention report in a real headless browser (Debian's chromium,
//! installed by scripts/test.sh): it renders, its charts are drawn, its
//! script runs without console errors, and it fetches nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeledger_tests::write_lines;

fn run(ledger: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeledger"))
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("LIFELEDGER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "no browser at {} (scripts/test.sh installs Debian's chromium; or set LIFELEDGER_CHROMIUM)",
        path.display()
    );
    path
}

/// Runs headless chromium on a file with `extra` arguments; every network
/// request goes to a closed port. Returns stdout and stderr.
fn browse(page: &Path, work: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir_in(work).unwrap();
    let out = Command::new(chromium())
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
            "--proxy-server=127.0.0.1:9",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of a `data-*` attribute the page's scripts stamped in the DOM.
fn stamp<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("{name}=\"");
    let at = dom.find(&needle)? + needle.len();
    dom[at..].split('"').next()
}

/// What the page itself did, as the browser saw it: requests it made that
/// went through (resource timing), requests the browser refused under the
/// page's Content-Security-Policy, and the page's console messages. The
/// browser's own background traffic (update checks and the like) is not
/// the page's and shows in none of these.
struct PageActivity {
    resources: Option<String>,
    csp_violations: usize,
    console: Vec<String>,
}

fn page_activity(dom: &str, stderr: &str) -> PageActivity {
    PageActivity {
        resources: stamp(dom, "data-resources").map(str::to_owned),
        csp_violations: stamp(dom, "data-csp-violations")
            .map(|n| n.parse().unwrap())
            .unwrap_or(0),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Pixels of exactly this colour in a PNG.
fn count_colour(png_path: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| px[..3] == rgb)
        .count()
}

#[test]
fn the_report_renders_in_a_headless_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().canonicalize().unwrap();
    let ledger = work.join("ledger");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = root.join("ledger/policies/retention-2026-11.toml");
    run(&ledger, &["policy", "publish", policy.to_str().unwrap()]);
    run(
        &ledger,
        &[
            "ingest",
            root.join("schemas/samples/lifecycle-sample.jsonl")
                .to_str()
                .unwrap(),
        ],
    );
    // One item deleted exactly at its rule B deadline: an on-time bar.
    let on_time = |id: &str, time: &str, kind: &str| {
        format!(
            r#"{{"schema_version":1,"event_id":"{id}","event_time":"{time}","account":{{"app_id":"1250000009","uin":"100000000009"}},"item_id":"kept-180","category":"product_configuration","region":"SG","kind":{kind}}}"#
        )
    };
    let extra = write_lines(
        &work,
        "extra.jsonl",
        &[
            on_time(
                "x1",
                "2026-02-01T00:00:00Z",
                r#"{"type":"collected","sensitive":false,"purpose":"p"}"#,
            ),
            on_time(
                "x2",
                "2026-02-01T00:00:00Z",
                r#"{"type":"stored","store":"mysql"}"#,
            ),
            on_time(
                "x3",
                "2026-07-31T00:00:00Z",
                r#"{"type":"deleted","store":"mysql"}"#,
            ),
        ],
    );
    run(&ledger, &["ingest", extra.to_str().unwrap()]);
    let key = work.join("signer");
    run(
        &ledger,
        &[
            "keygen",
            "--name",
            "report-test",
            "--out",
            key.to_str().unwrap(),
        ],
    );
    run(
        &ledger,
        &[
            "checkpoint",
            "--key",
            work.join("signer.key").to_str().unwrap(),
        ],
    );
    let page = work.join("report.html");
    let out = run(
        &ledger,
        &[
            "report",
            "--as-of",
            "2026-08-01",
            "--out",
            page.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checkpoint valid"));

    // Self-contained: nothing to fetch.
    let html = std::fs::read_to_string(&page).unwrap();
    for needle in ["<link", " src=", "url(", "@import", "https://"] {
        assert!(
            !html.contains(needle),
            "the page refers to something outside it: {needle}"
        );
    }
    assert!(html.contains("signature valid; the chains extend it consistently"));

    // Nothing to fetch, by construction: the page carries a policy that
    // forbids every outside source, and its inline code is pinned by hash.
    let csp = lifeledger::report::content_security_policy();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(
        html.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
            lifeledger::report::esc(&csp)
        )),
        "the page carries no Content-Security-Policy"
    );

    // Rendered by a browser: the script ran (it stamps the number of
    // finding rows), without a console message; the page made no request
    // and the browser refused none.
    let (dom, stderr) = browse(&page, &work, &["--dump-dom"]);
    let findings = html.matches("<tr class=\"finding\">").count();
    assert!(findings > 0);
    assert_eq!(
        stamp(&dom, "data-ready"),
        Some(format!("{}", 2 * findings).as_str()),
        "the page's script did not run: {}",
        &dom[..dom.len().min(400)]
    );
    let seen = page_activity(&dom, &stderr);
    assert!(
        seen.console.is_empty(),
        "console messages: {:?}",
        seen.console
    );
    assert_eq!(
        seen.resources.as_deref(),
        Some("0"),
        "the page fetched something"
    );
    assert_eq!(seen.csp_violations, 0, "the page tried to fetch something");

    // The same checks do see a page that tries: a copy of the report with
    // an image, a style sheet and a script injected from elsewhere is
    // refused each time, and says so.
    let tampered = work.join("tampered.html");
    std::fs::write(
        &tampered,
        html.replacen(
            "<main>",
            "<main><img src=\"http://127.0.0.1:9/leak.png\"><link rel=\"stylesheet\" href=\"https://example.invalid/x.css\"><script>fetch('https://example.invalid/leak')</script>",
            1,
        ),
    )
    .unwrap();
    let (dom, stderr) = browse(&tampered, &work, &["--dump-dom"]);
    let seen = page_activity(&dom, &stderr);
    assert!(
        seen.csp_violations >= 3,
        "refused requests not seen: {} violations, console {:?}",
        seen.csp_violations,
        seen.console
    );
    assert!(
        seen.console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "no console message for the refused requests: {:?}",
        seen.console
    );

    // The charts are drawn: a screenshot holds bars in the rule B colour
    // (deadlines ahead) and the on-time colour (deletions), far more
    // pixels of each than their 12x12 legend squares.
    let shot = work.join("report.png");
    let (_, stderr) = browse(
        &page,
        &work,
        &[
            "--window-size=1280,1800",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(shot.is_file(), "no screenshot: {stderr}");
    let due = count_colour(&shot, [0x15, 0x65, 0xc0]);
    let on_time = count_colour(&shot, [0x2e, 0x7d, 0x32]);
    assert!(due > 1_000, "deadline bars: {due} pixels");
    assert!(on_time > 1_000, "on-time bars: {on_time} pixels");
}
