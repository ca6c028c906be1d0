//! `poll --once`, `approve`, `retry` and `state copy`: an operator acting on the state.

use super::*;

pub(super) async fn poll(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let resolved = crate::app::wiring::resolve(&config, &crate::config::process_env)?;
    let Some(lotuspay) = &resolved.lotuspay else {
        println!("no provider to poll: configure providers.lotuspay");
        return Ok(Exit::Ok);
    };
    let poller = lotuspay.poller(None)?;
    let interrupt = super::interrupts("poll", config.shutdown_grace)?;
    let _owner = crate::store::Owner::claim(&config.state, "poll")?;
    let store = crate::store::SharedStore::open(&config.state).await?;
    let polled = poller.poll_once(&store, now_ms());
    tokio::pin!(polled);
    let (report, exit) = tokio::select! {
        report = &mut polled => (report?, Exit::Ok),
        _ = interrupt.cancelled() => match tokio::time::timeout(config.shutdown_grace, &mut polled).await {
            Ok(report) => (report?, Exit::Interrupted),
            Err(_) => {
                println!(
                    "interrupted: the poll did not finish within shutdown_grace; what it recorded stays, and the next poll reads on from the stored cursor"
                );
                return Ok(Exit::Interrupted);
            }
        },
    };
    println!(
        "lotuspay: {} event(s) listed, {} new: {} stop signal(s) queued, {} ignored, {} unmatched",
        report.listed, report.new, report.stops, report.ignored, report.unmatched
    );
    if report.stops > 0 {
        println!("the daemon or the next apply sends the UnenrollAutopay events");
    }
    if exit == Exit::Interrupted {
        println!("interrupted: the poll pass finished and was recorded");
    }
    Ok(exit)
}

pub(super) fn approve(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let _owner = crate::store::Owner::claim(&config.state, "approve")?;
    let mut store = Store::open(&config.state)?;
    let held = store.holds_by_cause()?;
    if held.is_empty() {
        println!("nothing is held");
        return Ok(Exit::Ok);
    }
    for h in &held {
        println!("approving {} unenroll(s): {}", h.count, h.cause);
    }
    let count = store.approve(None, &cli_actor(), now_ms())?;
    println!(
        "released {count} held unenroll(s) into the queue; the daemon or the next apply sends them"
    );
    Ok(Exit::Ok)
}

pub(super) fn retry(
    path: &Path,
    all: bool,
    keys: &[String],
    business_unit: Option<&str>,
) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let keys = if all {
        None
    } else {
        let unit = business_unit
            .or(config.paystar.default_business_unit.as_deref())
            .context("give --business-unit, or set paystar.default_business_unit")?;
        let parsed: Result<Vec<_>, String> = keys
            .iter()
            .map(|k| crate::customer::CustomerKey::parse_cli(unit, k))
            .collect();
        match parsed {
            Ok(keys) => Some(keys),
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(Exit::Usage);
            }
        }
    };
    let _owner = crate::store::Owner::claim(&config.state, "retry")?;
    let mut store = Store::open(&config.state)?;
    let count = store.retry_parked(keys.as_deref(), &cli_actor(), now_ms())?;
    println!("re-queued {count} parked customer(s); the daemon or the next apply sends them");
    if let Some(keys) = &keys
        && count < keys.len()
    {
        println!("{} of the given key(s) were not parked", keys.len() - count);
    }
    Ok(Exit::Ok)
}

pub(super) fn state_copy(from: &Path, to: &Path) -> anyhow::Result<Exit> {
    let source = Config::load(from)?;
    let target = Config::load(to)?;
    // `None`: interrupted. The copy is one transaction on the target: an
    // interrupt ends the process (the copying thread with it), and the
    // target's database rolls it back, so it holds nothing again.
    let finished = block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Listening before anything starts: no interrupt finds the default action.
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let owner = crate::store::Owner::claim(&target.state, "state copy")?;
        let (sent, copied) = tokio::sync::oneshot::channel();
        std::thread::spawn({
            let (source, target) = (source.clone(), target.clone());
            move || {
                let copy = || -> anyhow::Result<crate::store::copy::CopyReport> {
                    let reader = Store::open_read_only(&source.state)?;
                    let mut writer = Store::open(&target.state)?;
                    Ok(reader.copy_into(&mut writer)?)
                };
                let _ = sent.send(copy());
            }
        });
        let finished = tokio::select! {
            copied = copied => Some(copied.context("the copy stopped without a result")?),
            _ = term.recv() => None,
            _ = int.recv() => None,
        };
        anyhow::Ok((finished, owner))
    })?;
    // Held until the process ends (an interrupted copy's thread ends with it).
    let (finished, _owner) = finished;
    let Some(copied) = finished else {
        println!(
            "interrupted: the copy stops and its one transaction is rolled back; {} holds nothing from it: run state copy again",
            target.state.describe()
        );
        return Ok(Exit::Interrupted);
    };
    let report = copied.with_context(|| format!("cannot copy the state of {}", from.display()))?;
    println!(
        "copied {} rows from {} to {}",
        report.total(),
        source.state.describe(),
        target.state.describe()
    );
    for (table, rows) in &report.tables {
        println!("  {table}: {rows}");
    }
    Ok(Exit::Ok)
}

/// Who acts from the command line, as history records it: `cli:` and the OS user.
fn cli_actor() -> String {
    format!("cli:{}", crate::host::login_name())
}
