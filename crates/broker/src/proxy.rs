//! Routing: a request for a journal this broker does not serve goes to the broker that
//! does.
//!
//! Appends and fragment listings go to the journal's primary; reads are served by any
//! member of the route (each shows only what every member acknowledged), else proxied
//! to the primary. A request is proxied at most once: the proxying broker attaches its
//! `Header` (its id, the route, its keyspace revision), and a broker that receives a
//! request with a header waits for that revision and then serves it or answers with the
//! route, never proxying it again, so two brokers whose views disagree cannot bounce a
//! request between them. With `do_not_proxy`, the client asked to be told the route
//! instead (`NOT_JOURNAL_PRIMARY_BROKER` for appends, `NOT_JOURNAL_BROKER` for reads).

use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, AppendResponse, FragmentsRequest, FragmentsResponse, Header, ReadRequest,
    ReadResponse, Route,
};
use futures::{Stream, StreamExt};
use tonic::Streaming;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Where a request for a journal goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// This broker serves it.
    Local,
    /// Proxy it to the broker at this endpoint.
    Peer(String),
    /// Answer with this status (and the route in the header).
    Refuse(folio_protocol::Status),
}

/// Where a request was routed, with the header to answer or proxy with.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Serve it from this replica.
    Local(folio_journal::Replica, Header),
    /// Proxy it with this client.
    Peer(JournalClient<Channel>, Header),
    /// Answer with this status.
    Answer(folio_protocol::Status, Header),
}

/// What a request needs of the journal's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// An append: the primary, with a full route of this many members.
    Append {
        /// The journal's replication (see `Broker::required_members`).
        members: usize,
    },
    /// A read (any member of the route serves it) or a fragment listing (the primary).
    Read {
        /// Whether any member of the route serves it, not only the primary.
        any_member: bool,
    },
}

impl Purpose {
    /// The status for a client that asked not to be proxied.
    fn refusal(self) -> folio_protocol::Status {
        match self {
            Purpose::Append { .. } => folio_protocol::Status::NotJournalPrimaryBroker,
            Purpose::Read { .. } => folio_protocol::Status::NotJournalBroker,
        }
    }
}

/// Decides where a request goes. `served` is whether this broker holds the journal's
/// replica; `purpose` is `None` when there is no such journal; `proxied` is whether the
/// request came from another broker.
pub(crate) fn target(
    route: &Route,
    me: &folio_protocol::process_spec::Id,
    served: bool,
    purpose: Option<Purpose>,
    do_not_proxy: bool,
    proxied: bool,
) -> Target {
    use folio_protocol::Status;
    let Some(purpose) = purpose else {
        return Target::Refuse(Status::JournalNotFound);
    };
    let refusal = purpose.refusal();
    let primary = usize::try_from(route.primary)
        .ok()
        .and_then(|i| Some((route.members.get(i)?, route.endpoints.get(i)?)));
    if let (Purpose::Append { members }, Some(_)) = (purpose, primary) {
        // Fewer brokers than its replication hold the journal: an append could not be
        // acknowledged by as many as its spec asks.
        if route.members.len() < members {
            return Target::Refuse(Status::InsufficientJournalBrokers);
        }
    }
    if let Purpose::Read { any_member: true } = purpose
        && served
        && route.members.contains(me)
    {
        // Every member holds the journal and shows only what every member acknowledged.
        return Target::Local;
    }
    match primary {
        Some((id, _)) if id == me => {
            if served {
                Target::Local
            } else {
                // Assigned, but its replica is still starting (or failed to open its store).
                Target::Refuse(Status::NoJournalPrimaryBroker)
            }
        }
        None => Target::Refuse(Status::NoJournalPrimaryBroker),
        Some(_) if do_not_proxy || proxied => Target::Refuse(refusal),
        Some((_, endpoint)) if endpoint.is_empty() => {
            Target::Refuse(Status::NoJournalPrimaryBroker)
        }
        Some((_, endpoint)) => Target::Peer(endpoint.clone()),
    }
}

/// Forwards an append: the first message (with this broker's header) and every later one,
/// as they arrive. If the client's stream fails, the forwarded stream just ends without a
/// commit, and the primary rolls the append back.
pub(crate) async fn append(
    mut client: JournalClient<Channel>,
    first: AppendRequest,
    rest: Streaming<AppendRequest>,
    header: Header,
    token: Option<AsciiMetadataValue>,
) -> Result<AppendResponse, tonic::Status> {
    let first = AppendRequest {
        header: Some(header),
        ..first
    };
    let rest = rest
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| futures::future::ready(m.ok()));
    let mut upstream = tonic::Request::new(futures::stream::once(async move { first }).chain(rest));
    crate::auth::attach(&mut upstream, token);
    client
        .append(upstream)
        .await
        .map(tonic::Response::into_inner)
}

/// Forwards a read and relays its responses.
pub(crate) async fn read(
    mut client: JournalClient<Channel>,
    request: ReadRequest,
    header: Header,
    token: Option<AsciiMetadataValue>,
) -> Result<impl Stream<Item = Result<ReadResponse, tonic::Status>> + Send + 'static, tonic::Status>
{
    let mut request = tonic::Request::new(ReadRequest {
        header: Some(header),
        ..request
    });
    crate::auth::attach(&mut request, token);
    Ok(client.read(request).await?.into_inner())
}

/// Forwards a fragment listing.
pub(crate) async fn list_fragments(
    mut client: JournalClient<Channel>,
    request: FragmentsRequest,
    header: Header,
    token: Option<AsciiMetadataValue>,
) -> Result<FragmentsResponse, tonic::Status> {
    let mut request = tonic::Request::new(FragmentsRequest {
        header: Some(header),
        ..request
    });
    crate::auth::attach(&mut request, token);
    client
        .list_fragments(request)
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::Status;
    use folio_protocol::process_spec::Id;

    fn id(s: &str) -> Id {
        Id {
            zone: "z".into(),
            suffix: s.into(),
        }
    }

    fn route(primary: i32) -> Route {
        Route {
            members: vec![id("a"), id("b")],
            primary,
            endpoints: vec!["http://a".into(), "http://b".into()],
        }
    }

    #[test]
    fn requests_go_to_the_primary_once() {
        let append = Some(Purpose::Append { members: 2 });
        let t = |route: &Route, me: &str, served, do_not_proxy, proxied| {
            target(route, &id(me), served, append, do_not_proxy, proxied)
        };
        assert!(matches!(
            t(&route(0), "a", true, false, false),
            Target::Local
        ));
        assert!(
            matches!(t(&route(0), "b", false, false, false), Target::Peer(e) if e == "http://a")
        );
        assert!(matches!(
            t(&route(0), "b", false, true, false),
            Target::Refuse(Status::NotJournalPrimaryBroker)
        ));
        assert!(
            matches!(
                t(&route(0), "b", false, false, true),
                Target::Refuse(Status::NotJournalPrimaryBroker)
            ),
            "a proxied request is never proxied again"
        );
        assert!(matches!(
            t(&route(-1), "a", false, false, false),
            Target::Refuse(Status::NoJournalPrimaryBroker)
        ));
        assert!(
            matches!(
                t(&route(0), "a", false, false, false),
                Target::Refuse(Status::NoJournalPrimaryBroker)
            ),
            "assigned but not started yet"
        );
        assert!(matches!(
            target(&route(0), &id("a"), true, None, false, false),
            Target::Refuse(Status::JournalNotFound)
        ));
        assert!(matches!(
            target(&route(0), &id("b"), false, Some(READ), true, false),
            Target::Refuse(Status::NotJournalBroker)
        ));
    }

    const READ: Purpose = Purpose::Read { any_member: true };

    #[test]
    fn reads_are_served_by_any_member_listings_by_the_primary() {
        let list = Some(Purpose::Read { any_member: false });
        assert!(matches!(
            target(&route(0), &id("b"), true, Some(READ), false, false),
            Target::Local
        ));
        assert!(
            matches!(target(&route(0), &id("b"), true, list, false, false), Target::Peer(e) if e == "http://a")
        );
        assert!(
            matches!(target(&route(0), &id("c"), false, Some(READ), false, false), Target::Peer(e) if e == "http://a"),
            "a broker outside the route proxies to the primary"
        );
        assert!(
            matches!(
                target(&route(0), &id("b"), false, Some(READ), false, false),
                Target::Peer(_)
            ),
            "a member whose replica is not started yet proxies"
        );
    }

    #[test]
    fn appends_need_a_full_route_reads_do_not() {
        let three = Some(Purpose::Append { members: 3 });
        for me in ["a", "b"] {
            assert!(
                matches!(
                    target(&route(0), &id(me), me == "a", three, false, false),
                    Target::Refuse(Status::InsufficientJournalBrokers)
                ),
                "an append at {me} to a route of 2 of 3"
            );
        }
        assert!(matches!(
            target(&route(0), &id("a"), true, Some(READ), false, false),
            Target::Local
        ));
        assert!(
            matches!(
                target(&route(-1), &id("a"), false, three, false, false),
                Target::Refuse(Status::NoJournalPrimaryBroker)
            ),
            "no primary at all is answered as such"
        );
    }
}
