//! YAML 1.1 booleans exactly as PyYAML reads them, for the secretsmith file.
//!
//! secretsmith (Python) loads its file with PyYAML, whose resolver makes a plain scalar a
//! boolean only for these 18 spellings: `yes Yes YES no No NO true True TRUE false False FALSE
//! on On ON off Off OFF`. serde-saphyr's YAML 1.1 mode is wider (any casing, plus `y`/`n`), so
//! carpd reads `verify` as text and classifies it here, to mean what secretsmith means.
//! Spellings that only one of the two readers calls a boolean (`y`, `N`, `yEs`) are refused by
//! the caller: PyYAML would treat them as a CA path, which is certainly not what was meant.

/// What a scalar is to PyYAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyScalar {
    Bool(bool),
    /// Looks like a boolean to some YAML reader but is a string to PyYAML (`y`, `n`, `yEs`).
    Ambiguous,
    /// Any other text.
    Text,
}

/// Classifies the text of a plain scalar.
pub fn classify(s: &str) -> PyScalar {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            PyScalar::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            PyScalar::Bool(false)
        }
        _ if ["y", "n", "yes", "no", "true", "false", "on", "off"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(s)) =>
        {
            PyScalar::Ambiguous
        }
        _ => PyScalar::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyyaml_spellings_are_booleans() {
        for t in [
            "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            assert_eq!(classify(t), PyScalar::Bool(true), "{t}");
        }
        for f in [
            "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            assert_eq!(classify(f), PyScalar::Bool(false), "{f}");
        }
    }

    #[test]
    fn spellings_pyyaml_does_not_resolve_are_ambiguous() {
        for a in ["y", "Y", "n", "N", "yEs", "tRUE", "oN", "OfF", "nO"] {
            assert_eq!(classify(a), PyScalar::Ambiguous, "{a}");
        }
        for t in ["/etc/ca.pem", "1", "0", "", "yess", "t"] {
            assert_eq!(classify(t), PyScalar::Text, "{t}");
        }
    }
}
