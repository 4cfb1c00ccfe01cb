//! Signed GET URLs of fragment files, so readers fetch them from the bucket themselves.

use std::time::Duration;

use folio_protocol::Fragment;
use object_store::signer::Method;

use crate::fragment_name::format_fragment_path;
use crate::store::{FragmentStore, StoreKind};
use crate::{Error, Result};

/// A URL from which the fragment's file can be fetched with a plain GET for `ttl`:
/// a pre-signed URL for S3, GCS and Azure; a `file://` URL for local stores (readable by
/// processes on the same machine). Memory stores cannot be read from outside the process.
pub async fn signed_url(
    store: &FragmentStore,
    fragment: &Fragment,
    ttl: Duration,
) -> Result<String> {
    sign_object(store, &format_fragment_path(fragment), ttl).await
}

/// A GET URL for the object `name` (relative to the store URL), valid for `ttl`.
pub async fn sign_object(store: &FragmentStore, name: &str, ttl: Duration) -> Result<String> {
    let name = name.to_owned();
    let path = store.path(&name)?;
    match (store.kind(), store.signer()) {
        (StoreKind::File(dir), _) => {
            let file = dir.join(&name);
            url::Url::from_file_path(&file)
                .map(|u| u.to_string())
                .map_err(|()| Error::InvalidFragment {
                    fragment: name,
                    reason: format!("{} is not an absolute path", file.display()),
                })
        }
        (_, Some(signer)) => signer
            .signed_url(Method::GET, &path, ttl)
            .await
            .map(|u| u.to_string())
            .map_err(|e| Error::store("sign", &path, e)),
        (_, None) => Err(Error::Store {
            op: "sign",
            path: path.to_string(),
            source: object_store::Error::NotSupported {
                source: format!(
                    "{} cannot sign URLs: memory stores are only readable in-process",
                    store.url()
                )
                .into(),
            },
        }),
    }
}
