//! The lease keeper: one task per instance, on a database session of its own
//! (so that a long scan commit never delays a renewal). A standby looks at the
//! lease every `renew_interval` and takes it once it ran out; the leader
//! renews it as often, and opens the [`LeaseGate`] only as far as the last
//! confirmed renewal allows. The daemon hears of each change of role.

use super::{Leadership, LeaseGate, Role};
use crate::config::{HaConfig, StateConfig};
use crate::metrics::Metrics;
use crate::store::{LeaseLook, Renewal, SharedStore, StateError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// A change of this instance's role, for the daemon to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleChange {
    /// This instance took the lease: fence the writer to `epoch`, scan, deliver.
    Leading { epoch: i64 },
    /// The lease is gone (taken over, run out, or not renewable): stop leading.
    Lost { reason: String },
    /// Another instance leads: this one is a standby (said once per wait).
    Standby { leader: String },
}

enum Command {
    /// The instance may lead (again): look for the lease.
    Ready,
    /// The instance took the lease itself: renew it.
    Lead { epoch: i64, sent: Instant },
    /// The instance saw its writes fenced: it leads no more.
    StepDown(String),
    /// Release the lease if held, then end.
    Stop(oneshot::Sender<()>),
}

/// The handle the daemon keeps.
pub struct Keeper {
    commands: mpsc::UnboundedSender<Command>,
    changes: mpsc::UnboundedReceiver<RoleChange>,
    gate: LeaseGate,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Starts the keeper, waiting: it looks for the lease after [`Keeper::ready`].
    pub fn start(
        state: StateConfig,
        ha: HaConfig,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (change_tx, changes) = mpsc::unbounded_channel();
        let gate = LeaseGate::closed();
        let task = Task {
            state,
            ha,
            leadership,
            metrics,
            gate: gate.clone(),
            changes: change_tx,
            session: None,
            phase: Phase::Waiting,
            told_standby: false,
        };
        let task = tokio::spawn(task.run(command_rx));
        Self {
            commands,
            changes,
            gate,
            task,
        }
    }

    /// A keeper for a lease this instance took at `sent` under `epoch`
    /// (`apply`): it renews from the start, and releases at [`Keeper::stop`].
    pub fn leading(
        state: StateConfig,
        ha: HaConfig,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        epoch: i64,
        sent: Instant,
    ) -> Self {
        let keeper = Self::start(state, ha.clone(), leadership, metrics);
        keeper
            .gate
            .open_until(sent + ha.lease_ttl.saturating_sub(ha.safety_margin()));
        let _ = keeper.commands.send(Command::Lead { epoch, sent });
        keeper
    }

    /// The gate the leader's delivery checks before every request.
    pub fn gate(&self) -> LeaseGate {
        self.gate.clone()
    }

    /// The next change of role; `None` once the keeper ended.
    pub async fn next_change(&mut self) -> Option<RoleChange> {
        self.changes.recv().await
    }

    pub fn ready(&self) {
        let _ = self.commands.send(Command::Ready);
    }

    pub fn step_down(&self, reason: String) {
        let _ = self.commands.send(Command::StepDown(reason));
    }

    /// Releases the lease (a standby takes over at its next look) and ends.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        self.task.abort();
    }
}

enum Phase {
    Waiting,
    Looking,
    Leading { epoch: i64, confirmed: Instant },
}

struct Task {
    state: StateConfig,
    ha: HaConfig,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    gate: LeaseGate,
    changes: mpsc::UnboundedSender<RoleChange>,
    /// The keeper's own session; reopened after it failed.
    session: Option<SharedStore>,
    phase: Phase,
    /// Whether the daemon heard that another instance leads, since it last led.
    told_standby: bool,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(self.ha.renew_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Ready) => {
                        if matches!(self.phase, Phase::Waiting) {
                            self.phase = Phase::Looking;
                            tick.reset_immediately();
                        }
                    }
                    Some(Command::Lead { epoch, sent }) => {
                        self.phase = Phase::Leading { epoch, confirmed: sent };
                        self.metrics.set_leader(true);
                    }
                    Some(Command::StepDown(reason)) => {
                        if matches!(self.phase, Phase::Leading { .. }) {
                            self.lose(&reason, false);
                        }
                    }
                    Some(Command::Stop(done)) => {
                        self.release().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.release().await;
                        return;
                    }
                },
                _ = tick.tick() => match self.phase {
                    Phase::Waiting => {}
                    Phase::Looking => self.look().await,
                    Phase::Leading { epoch, confirmed } => self.renew(epoch, confirmed).await,
                },
            }
        }
    }

    /// Runs one lease call on the keeper's session, within `renew_interval`.
    async fn call<T: Send + 'static>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut crate::store::Store) -> Result<T, StateError> + Send + 'static,
    ) -> Option<T> {
        let bound = self.ha.renew_interval;
        let session = match &self.session {
            Some(s) => s.clone(),
            None => match tokio::time::timeout(bound, SharedStore::open(&self.state)).await {
                Ok(Ok(s)) => {
                    self.session = Some(s.clone());
                    s
                }
                Ok(Err(err)) => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(err)),
                        "leader lease: cannot open a database session; trying again"
                    );
                    return None;
                }
                Err(_) => {
                    tracing::warn!(within = ?bound, "leader lease: no database session within renew_interval; trying again");
                    return None;
                }
            },
        };
        match tokio::time::timeout(bound, session.call(f)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(err)),
                    "leader lease: {what} failed; trying again with a new session"
                );
                self.session = None;
                None
            }
            Err(_) => {
                tracing::warn!(within = ?bound, "leader lease: {what} did not answer within renew_interval");
                self.session = None;
                None
            }
        }
    }

    async fn look(&mut self) {
        let (id, ttl) = (self.leadership.instance_id().to_owned(), self.ha.lease_ttl);
        let sent = Instant::now();
        let Some(look) = self
            .call("looking at the lease", move |s| {
                s.lease_try_acquire(&id, ttl)
            })
            .await
        else {
            return;
        };
        match look {
            LeaseLook::Acquired(lease) => {
                self.gate.open_until(self.open_until(sent));
                self.phase = Phase::Leading {
                    epoch: lease.epoch,
                    confirmed: sent,
                };
                self.saw(Role::Leader, Some((lease.holder, lease.epoch)));
                self.metrics.set_leader(true);
                tracing::info!(
                    epoch = lease.epoch,
                    instance = self.leadership.instance_id(),
                    "took the leader lease; this instance leads"
                );
                let _ = self
                    .changes
                    .send(RoleChange::Leading { epoch: lease.epoch });
            }
            LeaseLook::Held(lease) => {
                if !self.told_standby {
                    self.told_standby = true;
                    let _ = self.changes.send(RoleChange::Standby {
                        leader: lease.holder.clone(),
                    });
                }
                self.saw(Role::Standby, Some((lease.holder, lease.epoch)));
            }
            LeaseLook::Busy => {}
            LeaseLook::Upgraded(version) => {
                if !self.told_standby {
                    self.told_standby = true;
                    tracing::error!("{}", LeaseLook::upgraded_message(version));
                    let _ = self.changes.send(RoleChange::Standby {
                        leader: format!("a newer paystar-sync (state schema v{version})"),
                    });
                }
            }
        }
    }

    async fn renew(&mut self, epoch: i64, confirmed: Instant) {
        let ttl = self.ha.lease_ttl;
        let sent = Instant::now();
        match self
            .call("renewing the lease", move |s| s.lease_renew(epoch, ttl))
            .await
        {
            Some(Renewal::Renewed) => {
                self.gate.open_until(self.open_until(sent));
                self.phase = Phase::Leading {
                    epoch,
                    confirmed: sent,
                };
            }
            Some(Renewal::Lost) => {
                self.lose("the lease ran out or another instance took it over", true)
            }
            Some(Renewal::Upgraded(version)) => {
                self.lose(&LeaseLook::upgraded_message(version), true)
            }
            None if Instant::now() >= confirmed + ttl => {
                self.lose("it could not be renewed for ha.lease_ttl", true)
            }
            None => {}
        }
    }

    /// Where the gate closes after a renewal sent at `sent` was confirmed: the
    /// lease runs `lease_ttl` from when the database ran it, which is later.
    fn open_until(&self, sent: Instant) -> Instant {
        sent + self.ha.lease_ttl.saturating_sub(self.ha.safety_margin())
    }

    /// Gives up leading. `tell`: the daemon does not know yet.
    fn lose(&mut self, reason: &str, tell: bool) {
        self.gate.close();
        self.phase = Phase::Waiting;
        self.told_standby = false;
        self.saw(Role::Standby, None);
        self.metrics.set_leader(false);
        tracing::warn!(
            reason,
            instance = self.leadership.instance_id(),
            "lost the leader lease; this instance sends nothing more and becomes a standby"
        );
        if tell {
            let _ = self.changes.send(RoleChange::Lost {
                reason: reason.to_owned(),
            });
        }
    }

    fn saw(&self, role: Role, leader: Option<(String, i64)>) {
        if self.leadership.saw(role, leader) {
            self.metrics.leader_changed();
        }
    }

    async fn release(&mut self) {
        self.gate.close();
        if let Phase::Leading { epoch, .. } = self.phase {
            self.phase = Phase::Waiting;
            if self
                .call("releasing the lease", move |s| s.lease_release(epoch))
                .await
                .is_some()
            {
                tracing::info!(epoch, "released the leader lease");
            }
            self.metrics.set_leader(false);
        }
    }
}
