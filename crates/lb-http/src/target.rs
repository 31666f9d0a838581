//! The request target as routing and the backend see it: the path in
//! normal form under the listener's rules, the query untouched. The
//! request's URI is rewritten in place, so every front × backend pair
//! forwards the path the router matched.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{Request, Uri};
use lb_config::PathNormalization;
use lb_core::{normalize_path, PathError};

/// Why a request target cannot be routed; answered 400.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadTarget {
    /// The path cannot be normalised.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The normalised path does not form a URI again.
    #[error("the normalised request path is not a valid URI")]
    Uri,
}

/// Normalise the path of `req`'s URI; nothing is touched (or allocated)
/// when it is already normal.
pub(crate) fn normalize<B>(
    req: &mut Request<B>,
    rules: &PathNormalization,
) -> Result<(), BadTarget> {
    let uri = req.uri();
    let path = match normalize_path(uri.path(), rules)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(path) => path,
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|_| BadTarget::Uri)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| BadTarget::Uri)?;
    Ok(())
}
