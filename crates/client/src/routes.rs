//! Dispatching straight to a journal's primary: routes learned from response headers.
//!
//! Every broker answers with a `Header` carrying the journal's route (members, their
//! endpoints, the primary's index). A [`RouteCache`] remembers the primary's endpoint per
//! journal and a client per endpoint, so an [`Appender`](crate::Appender) or a
//! [`Reader`](crate::Reader) given one sends its next request for that journal straight
//! to the primary instead of through whichever broker the default client reaches (which
//! would proxy it, one more hop). A route is forgotten when a request dispatched by it
//! fails in transport (the primary may be gone), and replaced whenever a broker answers
//! with another; until it is known, requests go through the default client.
//!
//! Reads go to the primary too: brokers serve reads from the primary (another member
//! proxies them there), so a same-zone member would save nothing yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use folio_protocol::Header;

use crate::connect::{Client, connect_lazy};

/// Journals whose route a cache holds at most; past it, an arbitrary one is forgotten.
pub const ROUTE_CACHE_CAPACITY: usize = 10_000;

/// Primaries of journals, learned from response headers, and a client per broker
/// endpoint. Cloning is cheap and shares the cache.
#[derive(Debug, Clone, Default)]
pub struct RouteCache {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Journal name (no `;suffix`) to its primary's endpoint.
    primaries: HashMap<String, String>,
    /// A lazily connecting client per endpoint.
    clients: HashMap<String, Client>,
}

impl RouteCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client of `journal`'s primary, and its endpoint, when its route is known.
    pub fn primary(&self, journal: &str) -> Option<(String, Client)> {
        let (name, _) = folio_protocol::split_meta(journal);
        let inner = self.lock();
        let endpoint = inner.primaries.get(name)?;
        let client = inner.clients.get(endpoint)?.clone();
        Some((endpoint.clone(), client))
    }

    /// Learns `journal`'s route from a broker's `header`. A route without a primary (or
    /// with an endpoint that is not a URL) makes the cache forget the journal.
    pub fn learn(&self, journal: &str, header: Option<&Header>) {
        let Some(route) = header.and_then(|h| h.route.as_ref()) else {
            return;
        };
        let (name, _) = folio_protocol::split_meta(journal);
        let endpoint = usize::try_from(route.primary)
            .ok()
            .and_then(|i| route.endpoints.get(i))
            .filter(|e| !e.is_empty());
        let mut inner = self.lock();
        let Some(endpoint) = endpoint else {
            inner.primaries.remove(name);
            return;
        };
        if !inner.clients.contains_key(endpoint) {
            match connect_lazy(endpoint) {
                Ok(client) => {
                    inner.clients.insert(endpoint.clone(), client);
                }
                Err(err) => {
                    tracing::debug!(journal, %endpoint, %err, "route endpoint is not usable");
                    inner.primaries.remove(name);
                    return;
                }
            }
        }
        if !inner.primaries.contains_key(name)
            && inner.primaries.len() >= ROUTE_CACHE_CAPACITY
            && let Some(evicted) = inner.primaries.keys().next().cloned()
        {
            inner.primaries.remove(&evicted);
        }
        inner.primaries.insert(name.to_owned(), endpoint.clone());
    }

    /// Forgets `journal`'s route (a request dispatched by it failed in transport).
    pub fn forget(&self, journal: &str) {
        let (name, _) = folio_protocol::split_meta(journal);
        self.lock().primaries.remove(name);
    }

    /// Number of journals whose route is known.
    pub fn len(&self) -> usize {
        self.lock().primaries.len()
    }

    /// Whether no route is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::Route;
    use folio_protocol::process_spec::Id;

    fn header(primary: i32, endpoints: &[&str]) -> Header {
        Header {
            route: Some(Route {
                members: endpoints
                    .iter()
                    .map(|e| Id {
                        zone: "z".into(),
                        suffix: (*e).into(),
                    })
                    .collect(),
                primary,
                endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            }),
            ..Header::default()
        }
    }

    #[tokio::test]
    async fn learns_replaces_and_forgets_primaries() {
        let cache = RouteCache::new();
        assert!(cache.primary("a/j").is_none());
        cache.learn("a/j", None);
        assert!(cache.is_empty(), "no header, nothing learned");

        cache.learn("a/j", Some(&header(1, &["http://b0:1", "http://b1:1"])));
        let (endpoint, _) = cache.primary("a/j;suffix").expect("known");
        assert_eq!(
            endpoint, "http://b1:1",
            "by the journal's name, suffix ignored"
        );

        cache.learn("a/j", Some(&header(0, &["http://b0:1", "http://b1:1"])));
        assert_eq!(cache.primary("a/j").expect("known").0, "http://b0:1");

        cache.learn("a/j", Some(&header(-1, &[])));
        assert!(cache.primary("a/j").is_none(), "no primary: forgotten");

        cache.learn("a/j", Some(&header(0, &["not a url"])));
        assert!(
            cache.primary("a/j").is_none(),
            "an unusable endpoint is not kept"
        );

        cache.learn("a/j", Some(&header(0, &["http://b0:1"])));
        cache.forget("a/j");
        assert!(cache.is_empty());
    }
}
