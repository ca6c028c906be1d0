//! The console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) with fantoccini. Screenshots of each page go to
//! `target/console-screenshots/`. Without chromium and chromedriver these tests
//! say so and are skipped, except under `CI=true`, where they fail.

use crate::console::{TOKEN, api_until, console_project, with_held_unenrolls};
use crate::support::unenrolled_accounts;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session; the driver process dies with it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

/// Starts chromedriver and a browser session, or says why not (`None`).
async fn browser() -> Option<Browser> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let ci = paystar_sync::config::process_env("CI").is_some_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but {} missing: apt-get install chromium chromium-driver",
            missing.join(" and ")
        );
        eprintln!(
            "SKIPPED: the console's browser tests need {} (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        return None;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("started successfully") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "chromedriver did not start on {port}");
    // Keep reading its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver");
    // target/<profile>/deps/it-… → target/console-screenshots
    let exe = std::env::current_exe().unwrap();
    let shots = exe.ancestors().nth(3).unwrap().join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser {
        client,
        _driver: driver,
        _profile: profile,
        shots,
    })
}

impl Browser {
    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        let element = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        element.text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, token: &str) {
        let form = self.client.form(Locator::Css("#login")).await.unwrap();
        form.set_by_name("token", token).await.unwrap();
        form.submit().await.unwrap();
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clerk_signs_in_and_sees_the_counts_a_rejected_rows_line_and_reason_and_a_customers_story()
 {
    let Some(b) = browser().await else { return };
    let (p, sandbox) = console_project(true).await;
    let daemon = with_held_unenrolls(&p, &sandbox).await;
    p.file(
        "late.csv",
        "accountNumber,firstName,lastName,emailAddress,autopay\n300,Ada,Lovelace,ada300@example.com,true\n301,Bob,Hope,bob-at-example.com,true\n",
    );
    let status = api_until(&daemon, "/api/v1/status", |s| {
        s["fileErrors"] == 1 && s["queue"]["pending"] == 0 && s["customers"]["acknowledged"] == 12
    })
    .await;
    let base = daemon.console_url();
    // Without the token: the sign-in form, and a wrong token is refused.
    b.open(&format!("{base}/")).await;
    assert!(b.path().await.starts_with("/login"), "{}", b.path().await);
    b.sign_in("not-the-console-token").await;
    assert_eq!(b.text("#refused").await, "That is not the console token.");
    b.screenshot("sign-in-refused").await;
    b.sign_in(TOKEN).await;
    assert_eq!(b.text("[data-count=held]").await, "10");
    for (card, value) in [
        ("pending", &status["queue"]["pending"]),
        ("retrying", &status["queue"]["retrying"]),
        ("parked", &status["queue"]["parked"]),
        ("desired", &status["customers"]["desired"]),
        ("acknowledged", &status["customers"]["acknowledged"]),
    ] {
        assert_eq!(
            b.text(&format!("[data-count={card}]")).await,
            value.to_string(),
            "{card}"
        );
    }
    assert!(b.text("#last-scan").await.contains("1 error(s)"));
    b.screenshot("overview").await;
    b.click("a[href='/files']").await;
    let errors = b.text("table.errors").await;
    assert!(
        errors.contains("3 row 301 emailAddress"),
        "the rejected row's line, kind, account and field: {errors}"
    );
    assert!(
        errors.contains("bob-at-example.com") || errors.contains("email"),
        "{errors}"
    );
    b.screenshot("files").await;
    b.click("a[href='/customers']").await;
    let find = b.client.form(Locator::Css("#find")).await.unwrap();
    find.set_by_name("account", "104").await.unwrap();
    find.submit().await.unwrap();
    let story = b.text("#history").await;
    assert!(story.contains("held"), "{story}");
    assert!(story.contains("a***@example.com"), "{story}");
    assert!(
        !story.contains("Lovelace") && !story.contains("ada104@"),
        "{story}"
    );
    b.screenshot("customer").await;
    for page in ["holds", "parked", "unmatched"] {
        b.click(&format!("a[href='/{page}']")).await;
        b.text("h1").await;
        b.screenshot(page).await;
    }
    assert!(
        unenrolled_accounts(&sandbox).is_empty(),
        "looking sends nothing"
    );
    b.close().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_mass_unenroll_approved_through_the_page_reaches_paystar_once() {
    let Some(b) = browser().await else { return };
    let (p, sandbox) = console_project(true).await;
    let daemon = with_held_unenrolls(&p, &sandbox).await;
    let base = daemon.console_url();
    b.open(&format!("{base}/holds")).await;
    b.sign_in(TOKEN).await;
    // Signed in, back on the page asked for.
    assert!(b.text("#holds").await.contains("10"));
    assert_eq!(b.path().await, "/holds");
    b.click("#approve-all").await;
    assert!(
        b.text("#question")
            .await
            .contains("Approve all 10 held unenroll(s)?"),
        "a confirmation comes first"
    );
    b.screenshot("approve-confirm").await;
    assert!(unenrolled_accounts(&sandbox).is_empty());
    b.click("#confirm").await;
    assert!(
        b.text("#done")
            .await
            .contains("Approved 10 held unenroll(s)")
    );
    b.screenshot("approved").await;
    sandbox.sandbox.paystar.wait_for(21, WAIT).await;
    let mut sent = unenrolled_accounts(&sandbox);
    sent.sort();
    assert_eq!(sent, (100..110).map(|a| a.to_string()).collect::<Vec<_>>());
    // Back and reload do not approve again: nothing is held any more.
    b.client.back().await.unwrap();
    b.open(&format!("{base}/holds")).await;
    assert_eq!(b.text("main p").await, "Nothing is held.");
    b.close().await;
    daemon.stop().await;
    assert_eq!(unenrolled_accounts(&sandbox).len(), 10);
}
