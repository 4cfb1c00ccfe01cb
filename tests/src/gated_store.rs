//! A fragment store whose every call passes a gate first: tests make a store fail on
//! demand (an outage, a broker that died after so many calls) without a server.

use std::sync::Arc;

use folio_fragment_store::FragmentStore;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Decides each call: `Ok` lets it through, an error is what the call answers.
pub type Gate = Arc<dyn Fn() -> object_store::Result<()> + Send + Sync>;

/// `store` with every call (put, get, list, delete, copy) passing `gate` first.
pub fn gated(store: &FragmentStore, gate: Gate) -> FragmentStore {
    store.with_object_store(Arc::new(Gated {
        inner: store.object_store().clone(),
        gate,
    }))
}

/// The error a gated call answers with when its gate is shut: a store that does not
/// answer (retryable, as a connection refused is).
pub fn refused(why: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "gated",
        source: why.to_owned().into(),
    }
}

struct Gated {
    inner: Arc<dyn ObjectStore>,
    gate: Gate,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        (self.gate)()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        (self.gate)()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        (self.gate)()?;
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Err(e) = (self.gate)() {
            return Box::pin(stream::once(async move { Err(e) }));
        }
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = (self.gate)() {
            return Box::pin(stream::once(async move { Err(e) }));
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        (self.gate)()?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        (self.gate)()?;
        self.inner.copy_opts(from, to, options).await
    }
}
