//! [`Masker`]: the job's secret values never leave the machine in its log.

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "[secret]";

/// Shorter values are not masked: masking every `a` or `42` in a log
/// would destroy it and hide nothing worth hiding.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces every occurrence of the job's secret values in a line. A value
/// split across two lines (or cut by the line cap) is not recognised:
/// masking works on whole lines.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut line = Cow::Borrowed(line);
        for secret in &self.secrets {
            if line.contains(secret.as_str()) {
                line = Cow::Owned(line.replace(secret.as_str(), MASK));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_appear() {
        let masker = Masker::new(["hunter22".to_string(), "hunter22-extended".into()]);
        assert_eq!(
            masker.mask("password=hunter22 again hunter22-extended!"),
            "password=[secret] again [secret]!"
        );
        assert!(matches!(masker.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_and_empty_values_are_not_masked() {
        let masker = Masker::new(["".to_string(), "ab".into(), "abc".into()]);
        assert_eq!(masker.mask("abc ab"), "abc ab");
    }
}
