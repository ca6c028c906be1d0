//! The mass-change guard (SPEC §6): when a pass's manifest-driven unenrolls
//! wait for approval. Pure, like the diff.

/// `safety.max_unenrolls` and `safety.max_unenroll_percent`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnenrollLimits {
    pub max_unenrolls: u64,
    pub max_percent: f64,
}

/// Why a pass's manifest-driven unenrolls are held.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GuardTrip {
    Count {
        count: u64,
        max: u64,
    },
    Percent {
        count: u64,
        known: u64,
        max_percent: f64,
    },
}

impl std::fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardTrip::Count { count, max } => {
                let (noun, verb) = unenrolls(*count);
                write!(
                    f,
                    "{count} {noun} in one pass {verb} safety.max_unenrolls ({max})"
                )
            }
            GuardTrip::Percent {
                count,
                known,
                max_percent,
            } => {
                let (noun, verb) = unenrolls(*count);
                let customers = if *known == 1 { "customer" } else { "customers" };
                write!(
                    f,
                    "{count} {noun} of {known} known {customers} {verb} safety.max_unenroll_percent ({max_percent} %)"
                )
            }
        }
    }
}

/// "unenroll … exceeds" or "unenrolls … exceed".
fn unenrolls(count: u64) -> (&'static str, &'static str) {
    if count == 1 {
        ("unenroll", "exceeds")
    } else {
        ("unenrolls", "exceed")
    }
}

/// The mass-change guard (SPEC §6): whether `count` new manifest-driven unenrolls
/// in one pass, among `known` customers, must wait for approval.
pub fn mass_unenroll(count: u64, known: u64, limits: UnenrollLimits) -> Option<GuardTrip> {
    if count == 0 {
        return None;
    }
    if count > limits.max_unenrolls {
        return Some(GuardTrip::Count {
            count,
            max: limits.max_unenrolls,
        });
    }
    let allowed = known as f64 * limits.max_percent / 100.0;
    if count as f64 > allowed {
        return Some(GuardTrip::Percent {
            count,
            known,
            max_percent: limits.max_percent,
        });
    }
    None
}

/// [`mass_unenroll`] where the number of known customers costs a count to learn:
/// `at_least` is a lower bound on it, and `known` is asked only when the bound
/// cannot settle the percentage (a larger count only allows more).
pub fn mass_unenroll_counting<E>(
    count: u64,
    at_least: u64,
    limits: UnenrollLimits,
    known: impl FnOnce() -> Result<u64, E>,
) -> Result<Option<GuardTrip>, E> {
    if mass_unenroll(count, at_least, limits).is_none() {
        return Ok(None);
    }
    Ok(mass_unenroll(count, known()?.max(at_least), limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: UnenrollLimits = UnenrollLimits {
        max_unenrolls: 50,
        max_percent: 5.0,
    };

    #[test]
    fn the_guard_trips_above_the_count_or_the_percentage_but_not_at_them() {
        assert_eq!(mass_unenroll(0, 10, LIMITS), None);
        assert_eq!(mass_unenroll(50, 10_000, LIMITS), None);
        assert_eq!(
            mass_unenroll(51, 10_000, LIMITS),
            Some(GuardTrip::Count { count: 51, max: 50 })
        );
        assert_eq!(mass_unenroll(5, 100, LIMITS), None);
        assert!(matches!(
            mass_unenroll(6, 100, LIMITS),
            Some(GuardTrip::Percent {
                count: 6,
                known: 100,
                ..
            })
        ));
    }

    #[test]
    fn the_guard_counts_known_customers_only_when_a_lower_bound_cannot_settle_it() {
        let never = || -> Result<u64, ()> { panic!("no count was needed") };
        assert_eq!(mass_unenroll_counting(0, 0, LIMITS, never), Ok(None));
        assert_eq!(mass_unenroll_counting(5, 100, LIMITS, never), Ok(None));
        assert_eq!(
            mass_unenroll_counting(6, 100, LIMITS, || Ok::<_, ()>(120)),
            Ok(None)
        );
        assert!(matches!(
            mass_unenroll_counting(6, 100, LIMITS, || Ok::<_, ()>(100)),
            Ok(Some(GuardTrip::Percent { known: 100, .. }))
        ));
        assert_eq!(
            mass_unenroll_counting(51, 10_000, LIMITS, || Ok::<_, ()>(10_000)),
            Ok(Some(GuardTrip::Count { count: 51, max: 50 }))
        );
        assert_eq!(
            mass_unenroll_counting(1, 0, LIMITS, || Err("down")),
            Err("down")
        );
        // Whatever the bound, the answer is the exact one's.
        arbtest::arbtest(|u| {
            let limits = UnenrollLimits {
                max_unenrolls: u.int_in_range(0..=100)?,
                max_percent: f64::from(u.int_in_range(0..=100u8)?),
            };
            let count = u.int_in_range(0..=200)?;
            let known = u.int_in_range(0..=2_000)?;
            let at_least = u.int_in_range(0..=known)?;
            assert_eq!(
                mass_unenroll_counting(count, at_least, limits, || Ok::<_, ()>(known)),
                Ok(mass_unenroll(count, known, limits))
            );
            Ok(())
        })
        .budget_ms(100);
    }
}
