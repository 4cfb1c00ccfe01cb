//! The HTTP gateway on the HTTP port, in Gazette's shape: `GET /{journal}?offset=N&block=true`
//! streams a journal's content, `HEAD` answers the same headers without content, and
//! `PUT /{journal}` appends the request body as one atomic append.
//!
//! Each request becomes a Read or Append RPC on this broker's own gRPC port, so routing
//! and proxying to the journal's primary are exactly the gRPC path's, and so is its
//! authorization: the request's `Authorization: Bearer` header goes along as the call's
//! metadata.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{AppendRequest, Fragment, ReadRequest, ReadResponse, Status};
use futures::StreamExt;
use tonic::transport::Channel;

/// Largest content message the gateway sends in an append (request bodies arrive in
/// frames of any size).
const APPEND_CHUNK: usize = 1 << 20;

/// The gateway's client of this broker's gRPC port.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    client: JournalClient<Channel>,
    /// Content bytes per append message: under the gRPC message limit.
    chunk: usize,
}

impl Gateway {
    /// A gateway to the gRPC port listening on `grpc` (an unspecified address is reached
    /// on loopback), over TLS when the port serves it: the certificate must then carry
    /// the host of the broker's advertised `endpoint`.
    pub(crate) fn new(
        grpc: SocketAddr,
        endpoint: &str,
        tls: Option<&folio_protocol::tls::Tls>,
        max_message_size: usize,
    ) -> Result<Self, String> {
        let host = match grpc.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{host}:{}", grpc.port());
        let mut channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| format!("gateway endpoint {url}: {e}"))?;
        if let Some(tls) = tls {
            // The advertised host, which the certificate names; an unspecified address
            // (a broker advertising 0.0.0.0) names nothing: then `localhost`.
            let domain = url::Url::parse(endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .filter(|h| {
                    !h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_unspecified())
                })
                .unwrap_or_else(|| "localhost".to_owned());
            channel = channel
                .tls_config(tls.client_config(Some(&domain)))
                .map_err(|e| format!("gateway TLS: {e}"))?;
        }
        let channel = channel.tcp_nodelay(true).connect_lazy();
        let client = JournalClient::new(channel)
            .max_decoding_message_size(max_message_size.max(4 << 20))
            .max_encoding_message_size(max_message_size);
        // A message is its content plus a few bytes of framing.
        let chunk = APPEND_CHUNK.min(max_message_size.saturating_sub(1024).max(1024));
        Ok(Self { client, chunk })
    }
}

/// What a read asks for, from the query string.
#[derive(Debug, Default, PartialEq)]
struct ReadQuery {
    offset: i64,
    block: bool,
    end_offset: i64,
}

/// Parses `offset`, `block` and `end_offset`; any other key, or a value that does not
/// parse, is an error naming it.
fn read_query(query: Option<&str>) -> Result<ReadQuery, String> {
    let mut out = ReadQuery::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "offset" => {
                out.offset = value
                    .parse()
                    .map_err(|_| format!("offset: {value:?} is not an integer"))?;
            }
            "end_offset" | "endOffset" => {
                out.end_offset = value
                    .parse()
                    .map_err(|_| format!("end_offset: {value:?} is not an integer"))?;
            }
            "block" => {
                out.block = match value.as_ref() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("block: {value:?} is not true or false")),
                };
            }
            other => {
                return Err(format!(
                    "{other:?} is not a read parameter (offset, block, end_offset)"
                ));
            }
        }
    }
    Ok(out)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// A journal outcome other than OK, as an HTTP status.
fn journal_status(status: Status) -> StatusCode {
    match status {
        Status::JournalNotFound => StatusCode::NOT_FOUND,
        Status::NotAllowed => StatusCode::FORBIDDEN,
        Status::OffsetNotYetAvailable => StatusCode::RANGE_NOT_SATISFIABLE,
        Status::WrongAppendOffset | Status::RegisterMismatch => StatusCode::CONFLICT,
        Status::FragmentStoreUnhealthy
        | Status::InsufficientJournalBrokers
        | Status::NoJournalPrimaryBroker => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// A gRPC error of the broker, as an HTTP answer.
pub(crate) fn grpc_error(status: &tonic::Status) -> Response {
    use tonic::Code as C;
    let http = match status.code() {
        C::InvalidArgument | C::OutOfRange => StatusCode::BAD_REQUEST,
        C::NotFound => StatusCode::NOT_FOUND,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        C::Unavailable | C::Aborted => StatusCode::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = text(http, format!("{:?}: {}", status.code(), status.message()));
    if http == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A gRPC request carrying the HTTP request's bearer token, if it had one: the broker's
/// gRPC service authorizes it as it would a client's call.
fn authorized<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::AsciiMetadataValue::try_from(v.as_bytes()).ok());
    crate::auth::attach(&mut request, value);
    request
}

fn header(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The headers of a read's metadata: the write head, and the fragment serving `offset`.
fn read_headers(response: &ReadResponse) -> HeaderMap {
    let mut headers = HeaderMap::new();
    header(&mut headers, "x-write-head", response.write_head);
    if let Some(fragment) = &response.fragment {
        header(&mut headers, "x-fragment-name", content_name(fragment));
        if !response.fragment_url.is_empty() {
            header(&mut headers, "x-fragment-location", &response.fragment_url);
        }
        if fragment.mod_time > 0 {
            let at = UNIX_EPOCH + Duration::from_secs(fragment.mod_time as u64);
            header(
                &mut headers,
                "x-fragment-last-modified",
                httpdate::fmt_http_date(at),
            );
        }
    }
    headers
}

/// A fragment's name within its journal: `{begin:016x}-{end:016x}-{sha1}{ext}`.
fn content_name(fragment: &Fragment) -> String {
    let path = folio_fragment_store::format_fragment_path(fragment);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// `GET` and `HEAD /{journal}`.
pub(crate) async fn read(
    State(gateway): State<Gateway>,
    method: Method,
    headers: HeaderMap,
    Path(journal): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match read_query(query.as_deref()) {
        Ok(query) => query,
        Err(err) => return text(StatusCode::BAD_REQUEST, err),
    };
    let head = method == Method::HEAD;
    let request = ReadRequest {
        journal,
        offset: query.offset,
        block: query.block,
        end_offset: query.end_offset,
        metadata_only: head,
        ..Default::default()
    };
    let mut client = gateway.client.clone();
    let mut responses = match client.read(authorized(&headers, request)).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    let first = match responses.message().await {
        Ok(Some(first)) => first,
        Ok(None) => {
            return text(StatusCode::BAD_GATEWAY, "the read ended before it answered");
        }
        Err(status) => return grpc_error(&status),
    };
    if first.status() != Status::Ok {
        let mut response = text(journal_status(first.status()), first.status().as_str_name());
        if first.write_head > 0 || first.status() == Status::OffsetNotYetAvailable {
            header(response.headers_mut(), "x-write-head", first.write_head);
        }
        return response;
    }
    let headers = read_headers(&first);
    if head {
        return (StatusCode::OK, headers).into_response();
    }
    // The content that follows. The body ends where the read does (a non-blocking read
    // at the write head); any other failure cuts it off with an error, so the client
    // never takes a truncated body for a whole one.
    let leading = (!first.content.is_empty()).then(|| Ok::<Bytes, std::io::Error>(first.content));
    let content = futures::stream::iter(leading).chain(
        responses
            .take_while(|response| {
                let at_head =
                    matches!(response, Ok(r) if r.status() == Status::OffsetNotYetAvailable);
                futures::future::ready(!at_head)
            })
            .filter_map(|response| {
                futures::future::ready(match response {
                    Ok(r) if r.status() != Status::Ok => Some(Err(std::io::Error::other(format!(
                        "the read failed: {}",
                        r.status().as_str_name()
                    )))),
                    Ok(r) if r.content.is_empty() => None,
                    Ok(r) => Some(Ok(r.content)),
                    Err(status) => Some(Err(std::io::Error::other(status.message().to_owned()))),
                })
            }),
    );
    let mut response = Response::new(Body::from_stream(content));
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `PUT /{journal}`: the body is one append, committed once the whole body arrived (a
/// body cut short appends nothing).
pub(crate) async fn append(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Path(journal): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{query:?}: an append takes no parameters"),
        );
    }
    let first = AppendRequest {
        journal,
        ..Default::default()
    };
    let chunk = gateway.chunk;
    // Content, then the empty message that commits: only when the body ended cleanly.
    let (complete_tx, complete) = tokio::sync::oneshot::channel::<bool>();
    let mut complete_tx = Some(complete_tx);
    let content = body
        .into_data_stream()
        .map(move |frame| match frame {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                if let Some(tx) = complete_tx.take() {
                    let _ = tx.send(false);
                }
                None
            }
        })
        .take_while(|frame| futures::future::ready(frame.is_some()))
        .flat_map(move |frame| {
            let bytes = frame.unwrap_or_default();
            let chunks: Vec<AppendRequest> = (0..bytes.len())
                .step_by(chunk)
                .map(|at| AppendRequest {
                    content: bytes.slice(at..(at + chunk).min(bytes.len())),
                    ..Default::default()
                })
                .collect();
            futures::stream::iter(chunks)
        });
    let commit = futures::stream::once(async move {
        // A body that failed sent `false`; one that ended dropped the sender.
        match complete.await {
            Ok(false) => None,
            _ => Some(AppendRequest::default()),
        }
    })
    .filter_map(futures::future::ready);
    let messages = futures::stream::once(futures::future::ready(first))
        .chain(content)
        .chain(commit);
    let mut client = gateway.client.clone();
    let response = match client.append(authorized(&headers, messages)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    if response.status() != Status::Ok {
        let detail = if response.store_health_error.is_empty() {
            String::new()
        } else {
            format!(": {}", response.store_health_error)
        };
        return text(
            journal_status(response.status()),
            format!("{}{detail}", response.status().as_str_name()),
        );
    }
    let mut headers = HeaderMap::new();
    if let Some(commit) = &response.commit {
        header(&mut headers, "x-commit-begin", commit.begin);
        header(&mut headers, "x-commit-end", commit.end);
        header(&mut headers, "x-commit-sha1-sum", commit.sha1());
        header(&mut headers, "x-write-head", commit.end);
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_parameters_parse_and_bad_ones_are_named() {
        assert_eq!(read_query(None), Ok(ReadQuery::default()));
        assert_eq!(
            read_query(Some("offset=42&block=true&end_offset=100")),
            Ok(ReadQuery {
                offset: 42,
                block: true,
                end_offset: 100
            })
        );
        assert_eq!(
            read_query(Some("offset=-1&block=0")),
            Ok(ReadQuery {
                offset: -1,
                ..ReadQuery::default()
            })
        );
        assert_eq!(
            read_query(Some("offset=x")),
            Err("offset: \"x\" is not an integer".to_owned())
        );
        assert_eq!(
            read_query(Some("block=maybe")),
            Err("block: \"maybe\" is not true or false".to_owned())
        );
        assert!(
            read_query(Some("ofset=1"))
                .expect_err("unknown")
                .contains("\"ofset\"")
        );
    }

    #[test]
    fn fragment_names_are_the_file_name_within_the_journal() {
        let fragment = Fragment {
            journal: "a/b".into(),
            begin: 0,
            end: 16,
            path_postfix: "date=2026".into(),
            ..Default::default()
        };
        assert!(content_name(&fragment).starts_with("0000000000000000-0000000000000010-"));
    }
}
