//! Byte sizes as the config file writes them: `512KiB`, `256MiB`, `1GiB`, `10MB`, `4096`.

pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a size (write 4096, 512KiB, 256MiB or 1GiB)");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(scale)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} must be more than 0 and at most 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_and_decimal_units() {
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("10MB"), Ok(10_000_000));
        assert_eq!(parse("4096"), Ok(4096));
        assert!(parse("12 parsecs").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99999999999GiB").is_err());
    }
}
