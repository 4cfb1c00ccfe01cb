//! The broker the journals commands talk to: the connection, the `List`, `Apply` and
//! `FragmentStoreHealth` calls, and the one-line text of what goes wrong with them.

use std::collections::HashMap;
use std::error::Error as _;

use anyhow::{Result, anyhow, bail};
use folio_client::{Appender, Client, ConnectOptions, ReadOptions, Reader, RetryPolicy};
use folio_protocol::{
    ApplyRequest, FragmentStoreHealthRequest, LabelSelector, LabelSet, ListRequest, Status,
    apply_request, list_response,
};
use futures::StreamExt;

/// The most journal names `current` puts in a `List` selector; beyond it, it lists all.
const MAX_NAMES_IN_SELECTOR: usize = 2_000;

/// A journal as `List` reports it: spec, mod revision and route.
pub type Listed = list_response::Journal;

/// A connection to one broker, opened on first use.
#[derive(Debug)]
pub struct Broker {
    client: Client,
    url: String,
    retry: RetryPolicy,
}

impl Broker {
    /// A lazily connected client of `url` (`http://host:port`; a bare `host:port` is
    /// taken as http).
    pub fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let url = with_scheme(url);
        let client = folio_client::connect(&url, options).map_err(|e| anyhow!("--broker: {e}"))?;
        Ok(Self {
            client,
            url,
            retry: RetryPolicy::default(),
        })
    }

    /// Uses `retry` for appends and reads (`--retry-for`).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The gRPC client, for appends and reads.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// How appends and reads retry.
    pub fn retry(&self) -> RetryPolicy {
        self.retry.clone()
    }

    /// An appender over this broker, retrying as `--retry-for` says.
    pub fn appender(&self) -> Appender {
        Appender::new(self.client()).with_retry(self.retry())
    }

    /// The journal's write head now, from a non-blocking read at the head (which the
    /// broker answers with OFFSET_NOT_YET_AVAILABLE and the head, and no content).
    pub async fn write_head(&self, journal: &str) -> Result<i64> {
        let options = ReadOptions {
            offset: -1,
            retry: self.retry(),
            ..ReadOptions::default()
        };
        let mut reader =
            Reader::new(self.client(), journal, options).map_err(|e| self.client_error(e))?;
        while let Some(item) = reader.next().await {
            item.map_err(|e| self.client_error(e))?;
        }
        match reader.write_head() {
            head if head >= 0 => Ok(head),
            _ => bail!("read {journal:?}: the broker did not report the write head"),
        }
    }

    /// The journals matching `selector`, in the broker's (name) order.
    pub async fn list(&self, selector: &LabelSelector) -> Result<Vec<Listed>> {
        let request = ListRequest {
            selector: Some(selector.clone()),
            ..ListRequest::default()
        };
        let mut stream = self
            .client
            .clone()
            .list(request)
            .await
            .map_err(|s| self.rpc_error("listing journals", &s))?
            .into_inner();
        // A long list comes in several messages; their journals are concatenated.
        let mut journals = Vec::new();
        let mut answered = false;
        while let Some(response) = stream
            .message()
            .await
            .map_err(|s| self.rpc_error("listing journals", &s))?
        {
            check_status("listing journals", response.status, "")?;
            journals.extend(response.journals);
            answered = true;
        }
        if !answered {
            bail!("listing journals: the broker ended the stream unanswered");
        }
        Ok(journals)
    }

    /// The current spec, mod revision and route of each of `names` that exists, by
    /// name, from one `List` whose selector is `name in (...)`.
    pub async fn current(&self, names: &[&str]) -> Result<HashMap<String, Listed>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        // Beyond a few thousand names the selector itself would be a large message:
        // list everything and keep the names asked for.
        let selector = match names.len() > MAX_NAMES_IN_SELECTOR {
            true => LabelSelector::default(),
            false => {
                let mut include = LabelSet::default();
                for name in names {
                    include.add_value(folio_protocol::label::META_NAME, *name);
                }
                LabelSelector {
                    include: Some(include),
                    exclude: None,
                }
            }
        };
        let wanted: std::collections::HashSet<&str> = names.iter().copied().collect();
        Ok(self
            .list(&selector)
            .await?
            .into_iter()
            .filter_map(|j| j.spec.as_ref().map(|s| s.name.clone()).map(|n| (n, j)))
            .filter(|(name, _)| wanted.contains(name.as_str()))
            .collect())
    }

    /// Applies `changes` in one transaction, all or nothing. Returns the keyspace
    /// revision of the broker's answer.
    pub async fn apply(&self, changes: Vec<apply_request::Change>) -> Result<i64> {
        let what = "applying specs";
        let response = self
            .client
            .clone()
            .apply(ApplyRequest { changes })
            .await
            .map_err(|s| self.rpc_error(what, &s))?
            .into_inner();
        if response.status == Status::EtcdTransactionFailed as i32 {
            bail!(
                "{what}: ETCD_TRANSACTION_FAILED: a spec changed since it was read, so nothing \
                 was applied; run the command again"
            );
        }
        check_status(what, response.status, "")?;
        Ok(response
            .header
            .and_then(|h| h.etcd)
            .map_or(0, |e| e.revision))
    }

    /// Asks the broker to probe `store`. `Ok(Err(why))` is an unhealthy store (or one
    /// the broker cannot open); `Err` is a failure to ask.
    pub async fn store_health(
        &self,
        store: &str,
        check_delete: bool,
    ) -> Result<Result<(), String>> {
        let request = FragmentStoreHealthRequest {
            fragment_store: store.to_owned(),
            check_delete,
            ..FragmentStoreHealthRequest::default()
        };
        match self.client.clone().fragment_store_health(request).await {
            Ok(response) => {
                let response = response.into_inner();
                match Status::try_from(response.status) {
                    Ok(Status::Ok) => Ok(Ok(())),
                    Ok(status) => Ok(Err(one_line(&format!(
                        "{}: {}",
                        status.as_str_name(),
                        response.store_health_error
                    )))),
                    Err(_) => bail!(
                        "checking store {}: unknown journal status {}",
                        super::output::redact_url(store),
                        response.status
                    ),
                }
            }
            // The broker could not open the store URL: that is the store's problem.
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Ok(Err(one_line(status.message())))
            }
            Err(status) => Err(self.rpc_error(
                &format!("checking store {}", super::output::redact_url(store)),
                &status,
            )),
        }
    }

    /// `what: why` for a failed gRPC call.
    pub fn rpc_error(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        anyhow!("{what}: {}", self.status_text(status))
    }

    /// A client error as one line: the client's own text, with the broker's gRPC
    /// failures spelled out and a hint where the journal status has a usual cause.
    pub fn client_error(&self, err: folio_client::Error) -> anyhow::Error {
        match err {
            folio_client::Error::Rpc {
                op,
                journal,
                status,
            } => anyhow!("{op} {journal:?}: {}", self.status_text(&status)),
            folio_client::Error::Status {
                status: Status::JournalNotFound,
                ..
            } => anyhow!("{err} (no journal has this name; see `folio journals list`)"),
            other => anyhow!("{}", one_line(&other.to_string())),
        }
    }

    /// A gRPC status as text: "cannot reach the broker" for transport failures, the
    /// broker's message otherwise, with the causes the status carries.
    fn status_text(&self, status: &tonic::Status) -> String {
        status_text(&format!("cannot reach the broker at {}", self.url), status)
    }
}

/// `url`, with `http://` in front when it names no scheme (a bare `host:port`).
pub(crate) fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// A gRPC status as one line of text: `unreachable` (with the transport's message) for a
/// transport failure, the server's message and code otherwise, then the causes the status
/// carries.
pub(crate) fn status_text(unreachable: &str, status: &tonic::Status) -> String {
    let transport = status.code() == tonic::Code::Unavailable && status.source().is_some();
    let mut text = if transport {
        let mut text = unreachable.to_owned();
        if !status.message().is_empty() {
            text.push_str(": ");
            text.push_str(status.message());
        }
        text
    } else {
        format!("{} ({})", status.message(), code_name(status.code()))
    };
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

/// `Ok` for an OK journal status; otherwise an error naming the status.
fn check_status(what: &str, raw: i32, detail: &str) -> Result<()> {
    match Status::try_from(raw) {
        Ok(Status::Ok) => Ok(()),
        Ok(status) if detail.is_empty() => bail!("{what}: {}", status.as_str_name()),
        Ok(status) => bail!("{what}: {}: {detail}", status.as_str_name()),
        Err(_) => bail!("{what}: unknown journal status {raw}"),
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Folds line breaks, so every error stays on one line.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_name_the_status() {
        assert_eq!(one_line("a\nb\r\n  c"), "a b c");
        let err =
            check_status("deleting x", Status::JournalNotFound as i32, "").expect_err("not found");
        assert_eq!(err.to_string(), "deleting x: JOURNAL_NOT_FOUND");
        let err = check_status("append", Status::FragmentStoreUnhealthy as i32, "s3: down")
            .expect_err("unhealthy");
        assert_eq!(
            err.to_string(),
            "append: FRAGMENT_STORE_UNHEALTHY: s3: down"
        );
        assert!(check_status("x", Status::Ok as i32, "").is_ok());
    }

    #[tokio::test]
    async fn refusals_carry_the_message_and_the_code() {
        let broker = Broker::connect("127.0.0.1:1", &ConnectOptions::default()).expect("lazy");
        assert_eq!(broker.url, "http://127.0.0.1:1");
        let text = broker.status_text(&tonic::Status::invalid_argument("selector: bad"));
        assert_eq!(text, "selector: bad (invalid argument)");
    }
}
