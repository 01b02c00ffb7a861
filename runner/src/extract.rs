//! Typed params and results: how a handler's second argument is made from
//! the job's JSON params ([`FromParams`], [`Json`]), and how its return
//! value becomes the JSON result.
//!
//! Params that don't fit the handler's type fail the attempt with a
//! permanent error: the same params would fail every retry, so retrying
//! only delays the dead letter.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{Context, JobError};

/// What a handler takes as its second argument. Implemented for
/// [`Value`] (the params as they are) and [`Json<T>`] (deserialized);
/// implement it for your own type to validate beyond what serde checks.
pub trait FromParams: Sized + Send + 'static {
    /// An error here is the attempt's error; make it permanent when the
    /// params themselves are wrong.
    fn from_params(params: Value) -> Result<Self, JobError>;
}

impl FromParams for Value {
    fn from_params(params: Value) -> Result<Self, JobError> {
        Ok(params)
    }
}

/// Params deserialized into `T`:
/// `.handler("resize", |ctx, Json(p): Json<Resize>| async move { .. })`.
///
/// When they don't fit, the attempt fails permanently with an error that
/// names the offending field, e.g.
/// `invalid params: sizes[1]: invalid type: string "big", expected u32`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromParams for Json<T> {
    fn from_params(params: Value) -> Result<Self, JobError> {
        serde_path_to_error::deserialize(params)
            .map(Json)
            .map_err(|e| {
                let path = e.path().to_string();
                let problem = e.into_inner();
                // The root's path is ".": only name a path inside the params.
                if path == "." {
                    JobError::permanent(format!("invalid params: {problem}"))
                } else {
                    JobError::permanent(format!("invalid params: {path}: {problem}"))
                }
            })
    }
}

/// A handler with its types erased, as the runner stores it by kind.
pub(crate) type Handler =
    Arc<dyn Fn(Context, Value) -> BoxFuture<'static, Result<Value, JobError>> + Send + Sync>;

/// Wraps a typed handler: extracts its params, runs it, serializes its
/// result.
pub(crate) fn erase<F, P, Fut, R>(handler: F) -> Handler
where
    F: Fn(Context, P) -> Fut + Send + Sync + 'static,
    P: FromParams,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    R: Serialize,
{
    Arc::new(move |ctx, params| match P::from_params(params) {
        Ok(params) => handler(ctx, params)
            .map(|outcome| outcome.and_then(to_result))
            .boxed(),
        Err(e) => futures::future::ready(Err(e)).boxed(),
    })
}

fn to_result(value: impl Serialize) -> Result<Value, JobError> {
    serde_json::to_value(value)
        .map_err(|e| JobError::permanent(format!("the result is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Resize {
        image: String,
        sizes: Vec<u32>,
    }

    fn error(params: Value) -> String {
        match Json::<Resize>::from_params(params) {
            Ok(_) => panic!("accepted"),
            Err(e) => {
                assert!(e.is_permanent(), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn bad_params_are_permanent_errors_naming_the_field() {
        assert_eq!(
            error(json!({"image": "a.png", "sizes": [64, "big"]})),
            r#"invalid params: sizes[1]: invalid type: string "big", expected u32"#
        );
        assert_eq!(
            error(json!({"sizes": []})),
            "invalid params: missing field `image`"
        );
        assert!(error(json!({"image": "a", "sizes": [], "colour": 1})).contains("colour"));
        assert_eq!(
            error(json!("cat.png")),
            r#"invalid params: invalid type: string "cat.png", expected struct Resize"#
        );
    }

    #[test]
    fn good_params_deserialize() {
        let Json(resize) =
            Json::<Resize>::from_params(json!({"image": "a.png", "sizes": [64]})).unwrap();
        assert_eq!((resize.image.as_str(), resize.sizes), ("a.png", vec![64]));
    }

    #[test]
    fn a_result_that_is_not_json_is_a_permanent_error() {
        let map = std::collections::HashMap::from([((1, 2), "tuple keys")]);
        assert!(to_result(map).unwrap_err().is_permanent());
        assert_eq!(to_result(json!({"a": 1})).unwrap(), json!({"a": 1}));
    }
}
