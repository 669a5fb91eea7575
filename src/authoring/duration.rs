//! Durations on the command line: `30s`, `2m`, `12h`, `7d`, `2w`, or a sum such as `1h30m`, as
//! `kubectl` and `flux` take them. Every time flag of every command reads them the same way.

use super::CliError;

/// Parses a positive duration: one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`, `w`.
/// A bare number is refused (`30`: seconds or days?) unless `bare_seconds` says it means seconds
/// (flags that took plain seconds before). `flag` names the flag in the error.
pub fn parse(flag: &str, text: &str, bare_seconds: bool) -> Result<jiff::SignedDuration, CliError> {
    check(text, bare_seconds).map_err(|why| CliError::Usage(format!("{flag} {text:?}: {why}")))
}

/// The duration, or why `text` is not one (without the flag's name: clap adds it).
fn check(text: &str, bare_seconds: bool) -> Result<jiff::SignedDuration, String> {
    let usage = |why: &str| why.to_owned();
    let trimmed = text.trim();
    if bare_seconds && !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return positive(trimmed.parse::<i64>().ok());
    }
    let mut total: Option<i64> = Some(0);
    let mut rest = trimmed;
    if rest.is_empty() {
        return Err(usage(
            "expected a duration such as 30s, 2m, 12h, 7d or 1h30m",
        ));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(usage(
                "expected a number and a unit (s, m, h, d, w), such as 30s, 2m, 12h, 7d or 1h30m",
            ));
        }
        let number = rest[..digits].parse::<i64>().ok();
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => {
                return Err(usage(
                    "a number needs a unit (s, m, h, d, w), such as 30s, 2m, 12h or 7d",
                ));
            }
            other => {
                return Err(usage(&format!(
                    "unknown unit {other:?}; use s, m, h, d or w, such as 30s, 2m, 12h or 7d"
                )));
            }
        };
        rest = &rest[unit_len..];
        total = total
            .zip(number)
            .and_then(|(t, n)| n.checked_mul(seconds).and_then(|s| t.checked_add(s)));
    }
    positive(total)
}

fn positive(seconds: Option<i64>) -> Result<jiff::SignedDuration, String> {
    match seconds {
        Some(0) => Err(
            "must be longer than zero (a zero duration is already over); for example 30s, 12h or 7d"
                .to_owned(),
        ),
        Some(s) if s <= 3650 * 86_400 => Ok(jiff::SignedDuration::from_secs(s)),
        _ => Err("longer than the limit of 3650d (ten years)".to_owned()),
    }
}

/// A clap value parser for time flags that took plain seconds before (`--fetch-timeout 120` still
/// works; `--fetch-timeout 2m` too).
pub fn seconds_flag(text: &str) -> Result<std::time::Duration, String> {
    check(text, true).map(|d| std::time::Duration::from_secs(d.as_secs().unsigned_abs()))
}

/// A clap value parser for durations that must carry a unit (`--warn-expiry 7d`).
pub fn duration_flag(text: &str) -> Result<jiff::SignedDuration, String> {
    check(text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_sums_and_refusals() {
        let secs = |t| parse("--x", t, false).map(|d| d.as_secs());
        assert_eq!(secs("30s").ok(), Some(30));
        assert_eq!(secs("2m").ok(), Some(120));
        assert_eq!(secs("1h30m").ok(), Some(5400));
        assert_eq!(secs("7d").ok(), Some(604_800));
        assert_eq!(secs("2w").ok(), Some(1_209_600));
        for bad in [
            "",
            "30",
            "0s",
            "tomorrow",
            "3x",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("--fetch-timeout", "120", true)
                .map(|d| d.as_secs())
                .ok(),
            Some(120)
        );
        let zero = parse("--expires", "0s", false).expect_err("zero");
        assert!(
            zero.to_string().contains("must be longer than zero"),
            "{zero}"
        );
    }
}
