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
//! Reads go to a member of the route in the client's zone when the cache was made with
//! [`RouteCache::in_zone`] and there is one (every member serves reads), else to the
//! primary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use folio_protocol::{Header, Route};

use crate::connect::{Client, ConnectOptions, connect};

/// Journals whose route a cache holds at most; past it, an arbitrary one is forgotten.
pub const ROUTE_CACHE_CAPACITY: usize = 10_000;

/// Routes of journals, learned from response headers, and a client per broker endpoint.
/// Cloning is cheap and shares the cache.
#[derive(Debug, Clone, Default)]
pub struct RouteCache {
    inner: Arc<Mutex<Inner>>,
    /// The client's zone: reads prefer a route member there.
    zone: Option<String>,
    /// How route endpoints are dialled (TLS, bearer token).
    options: ConnectOptions,
}

#[derive(Debug, Default)]
struct Inner {
    /// Journal name (no `;suffix`) to its route (with a primary and an endpoint per member).
    routes: HashMap<String, Route>,
    /// A lazily connecting client per endpoint.
    clients: HashMap<String, Client>,
}

impl RouteCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache for a client in `zone`: reads go to a route member in that zone when
    /// there is one (saving cross-zone traffic), else to the primary.
    pub fn in_zone(zone: impl Into<String>) -> Self {
        Self {
            zone: Some(zone.into()),
            ..Self::default()
        }
    }

    /// Dials route endpoints with `options`: TLS for `https://` ones (trusting its CA,
    /// presenting its certificate) and the bearer token, as the default client does.
    #[must_use]
    pub fn with_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client of `journal`'s primary, and its endpoint, when its route is known.
    pub fn primary(&self, journal: &str) -> Option<(String, Client)> {
        self.pick(journal, |route| usize::try_from(route.primary).ok())
    }

    /// A client of the member `journal`'s reads go to (the primary when it is in this
    /// cache's zone, else another member there, else the primary), and its endpoint, when
    /// its route is known.
    pub fn reader(&self, journal: &str) -> Option<(String, Client)> {
        self.pick(journal, |route| {
            let primary = usize::try_from(route.primary).ok();
            let Some(zone) = &self.zone else {
                return primary;
            };
            let local = |i: &usize| route.members.get(*i).is_some_and(|m| &m.zone == zone);
            primary
                .filter(local)
                .or_else(|| (0..route.members.len()).find(local))
                .or(primary)
        })
    }

    fn pick(
        &self,
        journal: &str,
        member: impl FnOnce(&Route) -> Option<usize>,
    ) -> Option<(String, Client)> {
        let (name, _) = folio_protocol::split_meta(journal);
        let mut inner = self.lock();
        let route = inner.routes.get(name)?;
        let endpoint = route.endpoints.get(member(route)?)?.clone();
        if let Some(client) = inner.clients.get(&endpoint) {
            return Some((endpoint, client.clone()));
        }
        match connect(&endpoint, &self.options) {
            Ok(client) => {
                inner.clients.insert(endpoint.clone(), client.clone());
                Some((endpoint, client))
            }
            Err(err) => {
                tracing::debug!(journal, %endpoint, %err, "route endpoint is not usable");
                inner.routes.remove(name);
                None
            }
        }
    }

    /// Learns `journal`'s route from a broker's `header`. A route without a primary, or
    /// without an endpoint for every member, makes the cache forget the journal.
    pub fn learn(&self, journal: &str, header: Option<&Header>) {
        let Some(route) = header.and_then(|h| h.route.as_ref()) else {
            return;
        };
        let (name, _) = folio_protocol::split_meta(journal);
        let usable = usize::try_from(route.primary)
            .ok()
            .and_then(|i| route.endpoints.get(i))
            .is_some_and(|e| !e.is_empty())
            && route.endpoints.len() == route.members.len();
        let mut inner = self.lock();
        if !usable {
            inner.routes.remove(name);
            return;
        }
        if !inner.routes.contains_key(name)
            && inner.routes.len() >= ROUTE_CACHE_CAPACITY
            && let Some(evicted) = inner.routes.keys().next().cloned()
        {
            inner.routes.remove(&evicted);
        }
        inner.routes.insert(name.to_owned(), route.clone());
    }

    /// Forgets `journal`'s route (a request dispatched by it failed in transport).
    pub fn forget(&self, journal: &str) {
        let (name, _) = folio_protocol::split_meta(journal);
        self.lock().routes.remove(name);
    }

    /// Number of journals whose route is known.
    pub fn len(&self) -> usize {
        self.lock().routes.len()
    }

    /// Whether no route is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::process_spec::Id;

    fn header(primary: i32, endpoints: &[&str]) -> Header {
        Header {
            route: Some(Route {
                members: endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Id {
                        zone: format!("z{}", i % 2),
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

    #[tokio::test]
    async fn reads_prefer_a_member_in_the_clients_zone() {
        let three = header(0, &["http://b0:1", "http://b1:1", "http://b2:1"]);
        // Zones: b0 z0 (the primary), b1 z1, b2 z0.
        let anywhere = RouteCache::new();
        anywhere.learn("a/j", Some(&three));
        assert_eq!(anywhere.reader("a/j").expect("known").0, "http://b0:1");
        let z1 = RouteCache::in_zone("z1");
        z1.learn("a/j", Some(&three));
        assert_eq!(z1.reader("a/j").expect("known").0, "http://b1:1");
        assert_eq!(z1.primary("a/j").expect("known").0, "http://b0:1");
        let z0 = RouteCache::in_zone("z0");
        z0.learn("a/j", Some(&three));
        assert_eq!(
            z0.reader("a/j").expect("known").0,
            "http://b0:1",
            "the primary when local"
        );
        let elsewhere = RouteCache::in_zone("z9");
        elsewhere.learn("a/j", Some(&three));
        assert_eq!(elsewhere.reader("a/j").expect("known").0, "http://b0:1");
    }
}
