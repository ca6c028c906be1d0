//! `paystar.rate_limit`: a cap on the request rate, written `50/s` or `3000/m`;
//! and how the delivery speed settings read in `status` and the console.

/// Requests per second, above zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
}

/// Reads `N/s` or `N/m` (`N` a positive number).
pub fn parse(text: &str) -> Result<RateLimit, String> {
    let fail = || {
        format!(
            "{text:?} is not a rate; write requests per second or per minute, e.g. 50/s or 3000/m"
        )
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(fail)?;
    let count: f64 = count.trim().parse().map_err(|_| fail())?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        _ => return Err(fail()),
    };
    if !(count.is_finite() && count > 0.0) {
        return Err(format!(
            "{text:?} must allow some requests: a number above 0, e.g. 50/s"
        ));
    }
    Ok(RateLimit {
        per_second: count / seconds,
    })
}

impl super::PaystarConfig {
    /// The concurrency as configured, with the limit learned so far (kept in
    /// the state) or in force now: "adaptive: 40 now, learned (up to 256)".
    pub fn describe_concurrency(&self, learned: Option<usize>, now: Option<i64>) -> String {
        let mut text = match (self.adaptive, now, learned) {
            (None, _, _) => format!("{} (fixed)", self.concurrency),
            (Some(max), Some(now), _) => format!("adaptive: {now} now (up to {max})"),
            (Some(max), None, Some(learned)) => {
                format!("adaptive: {learned} as last learned (up to {max})")
            }
            (Some(max), None, None) => format!(
                "adaptive: nothing learned yet, starts at {} (up to {max})",
                self.concurrency
            ),
        };
        if let Some(rate) = self.rate_limit {
            text.push_str(&format!(", at most {}/s", rate.per_second));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_per_second_or_minute_and_anything_else_names_the_form() {
        assert_eq!(parse("50/s").unwrap().per_second, 50.0);
        assert_eq!(parse(" 3000 / m ").unwrap().per_second, 50.0);
        assert_eq!(parse("0.5/s").unwrap().per_second, 0.5);
        for bad in ["50", "50/h", "fast/s", "0/s", "-3/s", "inf/s"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("50/s"), "{bad}: {err}");
        }
    }
}
