//! [`redact_url`]: a URL safe to print. Store URLs carry the store's
//! password (`redis://user:password@host`), callback URLs may carry
//! credentials too; every URL the project logs or prints goes through
//! this one function.

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// `url` with the password of its user-info replaced by [`REDACTED`]
/// (`redis://user:***@host:6379/0`); a user-info without a password is
/// treated as a token (`https://***@host/`). Text that is not a URL with
/// an authority comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user_info = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    format!("{scheme}://{user_info}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_and_tokens_and_keeps_the_rest() {
        let cases = [
            (
                "redis://:s3cret@10.0.0.5:6379/0",
                "redis://:***@10.0.0.5:6379/0",
            ),
            (
                "rediss://default:p@ss:word@host:6380",
                "rediss://default:***@host:6380",
            ),
            (
                "https://token@example.com/hook?x=1",
                "https://***@example.com/hook?x=1",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("https://example.com/a@b", "https://example.com/a@b"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
