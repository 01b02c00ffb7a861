//! Run management options a job carries besides its spec: tags, an expiry
//! for a job that never started, the opt-in OOM ladder, and the parent of
//! a job another job enqueued. They travel to `enqueue.lua` as one named
//! JSON argument ([`RunOptions`]) and are applied by `run_options.lua`.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{InvalidValue, JobId};

/// At most this many tags on one job.
pub const MAX_TAGS: usize = 16;
/// A tag is 1 to this many characters.
pub const MAX_TAG_LEN: usize = 64;

/// A label to find jobs by (`tenant:acme`, `nightly`):
/// `[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}`. Tags index jobs, so they are
/// bounded in length and count ([`MAX_TAGS`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$")]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.:=-".contains(c));
        if first_ok && rest_ok && s.len() <= MAX_TAG_LEN {
            Ok(Self(s.to_string()))
        } else {
            Err(InvalidValue(format!(
                "{s:?} is not a valid tag: use 1 to {MAX_TAG_LEN} characters of A-Z, a-z, 0-9, '_', '.', ':', '=', '-', starting with a letter or digit"
            )))
        }
    }

    /// A job's tags: each valid, at most [`MAX_TAGS`], duplicates dropped
    /// (order kept).
    pub fn parse_list(list: &[String]) -> Result<Vec<Self>, InvalidValue> {
        if list.len() > MAX_TAGS {
            return Err(InvalidValue(format!(
                "at most {MAX_TAGS} tags, got {}",
                list.len()
            )));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(list.len());
        for text in list {
            let tag = Self::parse(text)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(tags)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tag::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The opt-in OOM ladder: an attempt that ended `oom` is retried on the
/// next memory size (twice the memory, Fly's sizes double) up to
/// `max_memory_mb`. Retries still count against `max_attempts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OomLadder {
    pub max_memory_mb: u32,
}

/// The job that enqueued this one, and the child's key within it: a
/// parent's children have distinct keys, so a retried parent enqueuing the
/// same children again finds them instead of adding more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildOf {
    pub parent: JobId,
    pub key: String,
}

/// The run options of a new job, as `enqueue.lua` takes them (its named
/// `run_options` argument).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunOptions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Milliseconds from now after which the job, if not started, ends
    /// `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_ladder: Option<OomLadder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_of: Option<ChildOf>,
}

/// Longest child key.
pub const MAX_CHILD_KEY_LEN: usize = 200;

/// A child key: 1 to [`MAX_CHILD_KEY_LEN`] visible ASCII characters.
pub fn child_key(key: &str) -> Result<String, InvalidValue> {
    if key.is_empty() || key.len() > MAX_CHILD_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(InvalidValue(format!(
            "a child key is 1 to {MAX_CHILD_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_bounded_and_deduplicated() {
        for ok in ["a", "tenant:acme", "env=prod", "v1.2_x-y", &"a".repeat(64)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "has space", "ünï", "a/b", &"a".repeat(65)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        let list = ["x".to_string(), "y".into(), "x".into()];
        assert_eq!(Tag::parse_list(&list).unwrap().len(), 2);
        let many: Vec<String> = (0..=MAX_TAGS).map(|n| format!("t{n}")).collect();
        assert!(Tag::parse_list(&many).is_err());
    }

    #[test]
    fn child_keys_are_visible_ascii() {
        assert!(child_key("item-7").is_ok());
        assert!(child_key("").is_err());
        assert!(child_key("a b").is_err());
        assert!(child_key(&"k".repeat(201)).is_err());
    }
}
