//! A job handler in Rust: thumbnails of an image in several sizes.
//!
//! It shows typed params (`Json<ThumbnailParams>`: bad params fail the job
//! at once, naming the field), a typed result, progress reports and
//! stopping early when asked. The image work itself is left out: the
//! handler computes each thumbnail's size and path, where a real one would
//! decode, resize and upload.
//!
//! Build it into the job image as the runner (`RUNNER_EXEC`), then submit
//!
//! ```json
//! {"kind": "thumbnail", "params": {"image": "photos/cat.jpg", "width": 4000, "height": 3000, "sizes": [128, 512]}}
//! ```
//!
//! and get `{"thumbnails": [{"size": 128, "width": 128, "height": 96, "path": "photos/cat-128.jpg"}, ...]}`.

use runner::{Context, JobError, Json, Runner};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailParams {
    /// Where the source image is, e.g. `photos/cat.jpg`.
    pub image: String,
    pub width: u32,
    pub height: u32,
    /// The longest side of each thumbnail, in pixels.
    pub sizes: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct Thumbnails {
    pub thumbnails: Vec<Thumbnail>,
}

#[derive(Debug, Serialize)]
pub struct Thumbnail {
    pub size: u32,
    pub width: u32,
    pub height: u32,
    pub path: String,
}

pub async fn thumbnail(
    ctx: Context,
    Json(params): Json<ThumbnailParams>,
) -> Result<Thumbnails, JobError> {
    // Params serde accepts can still be wrong: that is permanent too.
    if params.width == 0 || params.height == 0 || params.sizes.contains(&0) {
        return Err(JobError::permanent(
            "width, height and sizes must be positive",
        ));
    }
    let (stem, extension) = params
        .image
        .rsplit_once('.')
        .unwrap_or((params.image.as_str(), "jpg"));
    let mut thumbnails = Vec::with_capacity(params.sizes.len());
    for (done, &size) in params.sizes.iter().enumerate() {
        if let Some(reason) = ctx.stop_reason() {
            // Retryable: the next attempt starts over.
            return Err(JobError::retryable(format!("stopped: {reason}")));
        }
        let scale = f64::from(size) / f64::from(params.width.max(params.height));
        let thumbnail = Thumbnail {
            size,
            width: (f64::from(params.width) * scale).round() as u32,
            height: (f64::from(params.height) * scale).round() as u32,
            path: format!("{stem}-{size}.{extension}"),
        };
        tracing::info!(size, path = %thumbnail.path, "thumbnail ready");
        thumbnails.push(thumbnail);
        let percent = (done + 1) * 100 / params.sizes.len();
        ctx.progress(percent as u8, format!("{size}px done")).await;
    }
    Ok(Thumbnails { thumbnails })
}

/// The runner with this example's handler (the tests run it in-process).
pub fn runner() -> Runner {
    Runner::new().handler("thumbnail", thumbnail)
}

fn main() {
    runner().main()
}
