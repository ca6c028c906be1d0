//! `run` (the daemon and its signals), `sandbox`, `completions` and `man`.

use super::*;

pub(super) fn completions(shell: CompletionShell) -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    use clap_complete::{Shell, generate};
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut command = Cli::command();
    // Into memory first: the generator panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    generate(shell, &mut command, "paystar-sync", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("cannot write the completions")?;
    Ok(Exit::Ok)
}

pub(super) fn man() -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot write the manual page")?;
    Ok(Exit::Ok)
}

pub(super) async fn sandbox(listen: std::net::SocketAddr) -> anyhow::Result<Exit> {
    let running = crate::sandbox::Sandbox::new()
        .start(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %running.addr, paystar = %running.paystar_endpoint(), "sandbox serving; Ctrl-C stops it");
    println!(
        "Paystar Events API simulator: {}",
        running.paystar_endpoint()
    );
    println!(
        "accepted events: http://{}/_sandbox/paystar/events",
        running.addr
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    running.stop().await;
    Ok(Exit::Ok)
}

pub(super) async fn daemon(cli: &Cli, path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path)?;
    let traces = crate::telemetry::Traces::start(config.telemetry.as_ref())?;
    init_logging(cli, traces.as_ref());
    if let Some(traces) = &traces {
        traces.announce();
    }
    let result = serve(path, config).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    result
}

async fn serve(path: &Path, config: Config) -> anyhow::Result<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = term.recv() => crate::app::Signal::Shutdown,
                _ = int.recv() => crate::app::Signal::Shutdown,
                _ = hup.recv() => crate::app::Signal::Reload,
            };
            if tx.send(signal).await.is_err() {
                return;
            }
        }
    });
    let notifier = crate::systemd::Notifier::from_env(&crate::config::process_env);
    crate::app::run(path, config, rx, notifier).await?;
    Ok(Exit::Ok)
}
