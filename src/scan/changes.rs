//! What a scan found, as its callers read it: each touched key's change and
//! whether its unenroll is held, the removed keys, the fingerprint `apply`
//! compares with its plan's, and the files and errors the pass read.

use super::*;

impl Scan {
    pub(super) fn key_of<'a>(&'a self, t: &'a TouchedKey) -> KeyRef<'a> {
        key_of(t, &self.rows)
    }

    /// The events a touched key needs, and whether its unenroll is held.
    pub(super) fn touched_plan(&self, i: usize) -> KeyPlan<'_> {
        let acked = acked_of(&self.states[i]);
        let state = self.states[i].as_deref();
        plan_key(
            Some(desired_of(&self.touched[i], &self.rows)),
            state.and_then(KeyState::provider_view),
            acked,
            state.is_some_and(|s| s.stop.is_some()),
            self.policy,
        )
    }

    /// Whether touched key `i`'s unenroll is held (a provider's stop never is).
    pub(super) fn unenroll_held(&self, i: usize, plan: &KeyPlan<'_>) -> bool {
        crate::reconcile::unenroll_held(plan, self.held[i])
    }

    pub(super) fn touched_change(&self, i: usize) -> PlannedChange<'_> {
        let t = &self.touched[i];
        let state = &self.states[i];
        let plan = self.touched_plan(i);
        let origin = match t {
            TouchedKey::Row(r) => {
                let row = &self.rows[*r as usize];
                Origin::Row {
                    file: &self.files[row.file as usize].rel,
                    line: row.line,
                }
            }
            TouchedKey::Gone(_, file) => Origin::Removed {
                file: &self.files[*file as usize].rel,
            },
        };
        PlannedChange {
            key: self.key_of(t),
            plan,
            origin,
            queue: state.as_ref().and_then(|s| s.queue.as_ref()),
            unenroll_held: self.unenroll_held(i, &plan),
        }
    }

    pub fn on_removal(&self) -> RemovalPolicy {
        self.policy.on_removal
    }

    /// Keys that left every manifest in this scan.
    pub fn removed_keys(&self) -> impl Iterator<Item = (KeyRef<'_>, &str)> {
        self.touched.iter().filter_map(|t| match t {
            TouchedKey::Gone(key, file) => Some((
                CustomerKey::as_ref(key),
                self.files[*file as usize].rel.as_str(),
            )),
            TouchedKey::Row(_) => None,
        })
    }

    /// Calls `f`, in key order, for every key with events to send once this scan
    /// is committed: the keys it changed, and those already waiting in the queue.
    pub fn for_each_change(
        &self,
        store: &Store,
        mut f: impl FnMut(&PlannedChange<'_>),
    ) -> Result<(), StateError> {
        let mut next = 0usize;
        let mut emit_until =
            |limit: Option<KeyRef<'_>>, f: &mut dyn FnMut(&PlannedChange<'_>)| -> bool {
                while next < self.touched.len() {
                    let key = self.key_of(&self.touched[next]);
                    match limit {
                        Some(limit) if key > limit => return false,
                        Some(limit) if key == limit => {
                            let change = self.touched_change(next);
                            next += 1;
                            if !change.plan.is_empty() {
                                f(&change);
                            }
                            return true;
                        }
                        _ => {
                            let change = self.touched_change(next);
                            next += 1;
                            if !change.plan.is_empty() {
                                f(&change);
                            }
                        }
                    }
                }
                false
            };
        store.for_each_queued(|key, state| {
            if emit_until(Some(key), &mut f) {
                return; // this scan changes the key: its new plan replaces the queued one
            }
            let plan = state.plan(self.policy);
            if !plan.is_empty() {
                f(&PlannedChange {
                    key,
                    plan,
                    origin: Origin::Waiting {
                        file: state.desired.as_ref().and_then(|d| d.file.as_deref()),
                        line: state.desired.as_ref().and_then(|d| d.line),
                    },
                    queue: state.queue.as_ref(),
                    unenroll_held: false,
                });
            }
        })?;
        emit_until(None, &mut f);
        Ok(())
    }

    /// What a reviewed plan was made from: the manifests' content, Paystar's
    /// acknowledged state, and the exact events (unmasked) it would send.
    pub fn fingerprint(&self, store: &Store) -> Result<Fingerprint, StateError> {
        let mut manifests = Sha256::new();
        for file in self.files.iter().filter(|f| f.fate != FileFate::Deleted) {
            let sha = file.sha256.or(file.stored.as_ref().and_then(|s| s.sha256));
            manifests.update(file.rel.as_bytes());
            manifests.update([0]);
            manifests.update(sha.map_or_else(|| b"unreadable".to_vec(), |h| h.to_vec()));
            manifests.update([0]);
        }
        let mut plan = Sha256::new();
        self.for_each_change(store, |c| {
            let k = c.key;
            let mut line = format!("{}\0{}\0{}", k.business_unit, k.account, k.sub_account);
            if let Some(m) = c.plan.manage {
                let f = m.fields;
                line.push_str(&format!(
                    "\0manage\0{}\0{}\0{}\0{}",
                    f.first_name,
                    f.last_name,
                    f.email,
                    m.original_email.unwrap_or("")
                ));
            }
            if let Some(cause) = c.plan.unenroll {
                line.push_str(&format!(
                    "\0unenroll\0{}\0{}",
                    cause.as_str(),
                    c.unenroll_held
                ));
            }
            plan.update(line.as_bytes());
            plan.update(b"\n");
        })?;
        let hex = |h: sha2::digest::Output<Sha256>| crate::hex::hex(&h);
        Ok(Fingerprint {
            manifests: hex(manifests.finalize()),
            acknowledged: store.acked_version()?,
            plan: hex(plan.finalize()),
            body: None,
        })
    }

    /// Files whose errors this scan knows afresh (read, failed or gone), with them.
    pub fn fresh_errors_by_file(&self) -> impl Iterator<Item = (&str, &[ManifestError])> {
        self.files
            .iter()
            .filter(|f| {
                matches!(
                    f.fate,
                    FileFate::Parsed { .. } | FileFate::Failed | FileFate::Deleted
                )
            })
            .map(|f| (f.rel.as_str(), f.errors.as_slice()))
    }

    /// Files read and parsed in this scan.
    pub fn parsed_files(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|f| matches!(f.fate, FileFate::Parsed { .. }))
            .map(|f| f.rel.as_str())
    }

    /// Errors found by reading files in this scan (not the stored ones of unchanged files).
    /// The errors this scan found that the last one did not: a file read
    /// again with the same errors is not news.
    pub fn new_errors(&self) -> impl Iterator<Item = &ManifestError> {
        self.files
            .iter()
            .filter(|f| !self.repeated.contains(&f.rel))
            .flat_map(|f| f.errors.iter())
    }
}
